"""Sparse ground-truth x prediction overlap counts: the one table every IoU and ISBI metric is derived from.

Label arrays are channel stacks ``(K, Z, Y, X)`` of non-negative integers (``K = 1`` is a flat
labelling, 2D data has ``Z = 1``). 0 is background; an id may sit in several channels but appears at
most once per voxel; a voxel that is non-zero in several channels belongs to several instances.

Counting rule, for one voxel: let ``G`` be the set of its non-zero GT ids (``{0}`` when it has none)
and ``P`` likewise for the prediction. The voxel adds 1 to the count of every pair in ``G x P``, and 1
to the size of every id in ``G`` and in ``P``. For flat labels this is the ordinary contingency table;
for stacks it is the original's channel x channel tiling without the spurious pairs with 0 that a
channel-wise tiling produces.

Tables of disjoint blocks add up exactly (``merge_tables``), which is what makes blockwise evaluation
of volumes larger than memory possible: a block returns a table of a few thousand rows, never an array.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from ppp_dist.errors import InputDataError

__all__ = [
    "OverlapTable",
    "as_channel_stack",
    "overlap_table",
    "merge_tables",
    "mask_predictions_to_foreground",
    "remove_small_predictions",
]

_ID = np.uint64
_COUNT = np.int64


@dataclass(frozen=True)
class OverlapTable:
    """Voxel-pair counts between two channel stacks; every id array is sorted ascending.

    Attributes
    ----------
    gt_ids, gt_sizes : (n,) uint64 / int64
        Every GT id present (0 included where some voxel has no GT) and its voxel count.
    pred_ids, pred_sizes : (m,) uint64 / int64
        Likewise for the prediction.
    pair_gt, pair_pred, pair_count : (r,) uint64 / uint64 / int64
        Non-zero pair counts, sorted by (gt, pred).
    n_voxels : spatial voxels counted.
    gt_channels, pred_channels : K of each stack (ISBI scores need both to be 1).
    """

    gt_ids: np.ndarray
    gt_sizes: np.ndarray
    pred_ids: np.ndarray
    pred_sizes: np.ndarray
    pair_gt: np.ndarray
    pair_pred: np.ndarray
    pair_count: np.ndarray
    n_voxels: int
    gt_channels: int = 1
    pred_channels: int = 1

    @property
    def gt_instances(self) -> np.ndarray:
        """(n,) uint64: the GT instance ids (background 0 excluded)."""
        return self.gt_ids[self.gt_ids != 0]

    @property
    def pred_instances(self) -> np.ndarray:
        """(m,) uint64: the predicted instance ids (background 0 excluded)."""
        return self.pred_ids[self.pred_ids != 0]

    def size_of_gt(self, ids: np.ndarray) -> np.ndarray:
        """Voxel counts of the given GT ids (each must be present)."""
        return self.gt_sizes[np.searchsorted(self.gt_ids, ids)]

    def size_of_pred(self, ids: np.ndarray) -> np.ndarray:
        """Voxel counts of the given predicted ids (each must be present)."""
        return self.pred_sizes[np.searchsorted(self.pred_ids, ids)]


def as_channel_stack(labels: np.ndarray, name: str = "labels") -> np.ndarray:
    """View ``labels`` as ``(K, Z, Y, X)``: ``(Y, X)`` -> ``(1, 1, Y, X)``, ``(Z, Y, X)`` -> ``(1, Z, Y, X)``.

    Raises InputDataError for other ranks, non-integer dtypes and negative ids.

    Examples
    --------
    >>> as_channel_stack(np.zeros((4, 5), np.uint8)).shape
    (1, 1, 4, 5)
    """
    labels = np.asarray(labels)
    if labels.dtype == bool:
        labels = labels.astype(np.uint8)
    if labels.dtype.kind not in "ui":
        raise InputDataError(f"{name} must hold integer instance ids, got dtype {labels.dtype}")
    if labels.ndim == 2:
        labels = labels[None, None]
    elif labels.ndim == 3:
        labels = labels[None]
    elif labels.ndim != 4:
        raise InputDataError(
            f"{name} must be (Y, X), (Z, Y, X) or a channel stack (K, Z, Y, X); got shape {labels.shape}"
        )
    if labels.dtype.kind == "i" and labels.size and labels.min() < 0:
        raise InputDataError(f"{name} holds negative ids (min {labels.min()}); ids must be >= 0")
    return labels


def overlap_table(gt: np.ndarray, pred: np.ndarray) -> OverlapTable:
    """Count voxel overlaps between a GT and a predicted labelling (see the module docstring).

    Parameters
    ----------
    gt, pred : (Y, X), (Z, Y, X) or (K, Z, Y, X) non-negative integer ids, same spatial shape.

    Examples
    --------
    >>> t = overlap_table(np.array([[1, 1, 0]]), np.array([[2, 0, 0]]))
    >>> [(int(g), int(p), int(c)) for g, p, c in zip(t.pair_gt, t.pair_pred, t.pair_count)]
    [(0, 0, 1), (1, 0, 1), (1, 2, 1)]
    """
    gt = as_channel_stack(gt, "ground truth")
    pred = as_channel_stack(pred, "prediction")
    if gt.shape[1:] != pred.shape[1:]:
        raise InputDataError(
            f"ground truth spatial shape {gt.shape[1:]} differs from prediction {pred.shape[1:]}"
        )
    n_voxels = int(np.prod(gt.shape[1:]))
    g_flat = gt.reshape(gt.shape[0], -1)
    p_flat = pred.reshape(pred.shape[0], -1)
    g_valid = _valid_masks(g_flat)
    p_valid = _valid_masks(p_flat)

    pg, pp, pc = [], [], []
    for i in range(g_flat.shape[0]):
        for j in range(p_flat.shape[0]):
            if g_valid[i] is None and p_valid[j] is None:
                a, b = g_flat[i], p_flat[j]
            else:
                m = _and(g_valid[i], p_valid[j], n_voxels)
                a, b = g_flat[i][m], p_flat[j][m]
            u, v, c = _count_pairs(a, b)
            pg.append(u)
            pp.append(v)
            pc.append(c)
    pair_gt, pair_pred, pair_count = _sum_by_pair(np.concatenate(pg), np.concatenate(pp), np.concatenate(pc))
    both_flat = g_flat.shape[0] == 1 and p_flat.shape[0] == 1
    gt_ids, gt_sizes = _sizes(g_flat, g_valid, pair_gt, pair_count, "ground truth", both_flat)
    pred_ids, pred_sizes = _sizes(p_flat, p_valid, pair_pred, pair_count, "prediction", both_flat)
    return OverlapTable(gt_ids, gt_sizes, pred_ids, pred_sizes, pair_gt, pair_pred, pair_count,
                        n_voxels, gt.shape[0], pred.shape[0])


def merge_tables(tables: Sequence[OverlapTable]) -> OverlapTable:
    """Add up the tables of disjoint blocks (associative and commutative: usable as a tree reduction)."""
    if not tables:
        raise ValueError("merge_tables needs at least one table")
    if len(tables) == 1:
        return tables[0]
    gt_ids, gt_sizes = _sum_by_id(np.concatenate([t.gt_ids for t in tables]),
                                  np.concatenate([t.gt_sizes for t in tables]))
    pred_ids, pred_sizes = _sum_by_id(np.concatenate([t.pred_ids for t in tables]),
                                      np.concatenate([t.pred_sizes for t in tables]))
    pair_gt, pair_pred, pair_count = _sum_by_pair(np.concatenate([t.pair_gt for t in tables]),
                                                  np.concatenate([t.pair_pred for t in tables]),
                                                  np.concatenate([t.pair_count for t in tables]))
    return OverlapTable(gt_ids, gt_sizes, pred_ids, pred_sizes, pair_gt, pair_pred, pair_count,
                        sum(t.n_voxels for t in tables), tables[0].gt_channels, tables[0].pred_channels)


def mask_predictions_to_foreground(table: OverlapTable) -> OverlapTable:
    """The table of the prediction with every voxel that is GT background set to 0 (``foreground_only``).

    Exact for channel stacks too: a predicted instance loses exactly its voxels counted with GT id 0,
    instances left without voxels disappear, and every GT-background voxel becomes the pair (0, 0).
    """
    n_gt_bg = _lookup(table.gt_ids, table.gt_sizes, 0)
    old_00 = int(table.pair_count[(table.pair_gt == 0) & (table.pair_pred == 0)].sum())
    bg = (table.pair_gt == 0) & (table.pair_pred != 0)
    lost_ids, lost = _sum_by_id(table.pair_pred[bg], table.pair_count[bg])
    sizes = table.pred_sizes.copy()
    sizes[np.searchsorted(table.pred_ids, lost_ids)] -= lost
    keep = table.pair_gt != 0
    pg, pp, pc = table.pair_gt[keep], table.pair_pred[keep], table.pair_count[keep]
    if n_gt_bg:
        pg, pp, pc = _sum_by_pair(np.append(pg, _ID(0)), np.append(pp, _ID(0)), np.append(pc, n_gt_bg))
    # voxels without prediction: the old ones plus the GT-background voxels that had one
    new_bg = _lookup(table.pred_ids, table.pred_sizes, 0) + n_gt_bg - old_00
    pred_ids, pred_sizes = _set_background(table.pred_ids, sizes, new_bg)
    return OverlapTable(table.gt_ids, table.gt_sizes, pred_ids, pred_sizes, pg, pp, pc,
                        table.n_voxels, table.gt_channels, table.pred_channels)


def remove_small_predictions(table: OverlapTable, max_size: int) -> OverlapTable:
    """The table with every predicted instance of at most ``max_size`` voxels removed.

    For a flat prediction the removed voxels become background exactly (pairs (g, p) -> (g, 0)). For a
    channel stack the removed instances' pairs are dropped and the pairs with prediction 0 are left as
    they were (they are exact only where no other prediction channel covers the voxel); no IoU quantity
    uses them, and the ISBI scores, which do, require flat labels.
    """
    if max_size <= 0:
        return table
    small = (table.pred_ids != 0) & (table.pred_sizes <= max_size)
    if not small.any():
        return table
    small_ids = table.pred_ids[small]
    hit = np.isin(table.pair_pred, small_ids)
    pg, pp, pc = table.pair_gt, table.pair_pred.copy(), table.pair_count
    if table.pred_channels == 1:
        pp[hit] = 0
        pg, pp, pc = _sum_by_pair(pg, pp, pc)
        freed = int(table.pred_sizes[small].sum())
        sizes = np.where(small, 0, table.pred_sizes)
        pred_ids, pred_sizes = _set_background(table.pred_ids, sizes,
                                               _lookup(table.pred_ids, table.pred_sizes, 0) + freed)
    else:
        pg, pp, pc = pg[~hit], pp[~hit], pc[~hit]
        pred_ids, pred_sizes = table.pred_ids[~small], table.pred_sizes[~small]
    return OverlapTable(table.gt_ids, table.gt_sizes, pred_ids, pred_sizes, pg, pp, pc,
                        table.n_voxels, table.gt_channels, table.pred_channels)


# --------------------------------------------------------------------------------------------- helpers


def _valid_masks(flat: np.ndarray) -> list[np.ndarray | None]:
    """Per channel, the voxels whose id in that channel is part of the voxel's id set (None = all).

    Channel c contributes its non-zero ids; channel 0 also contributes the 0 of voxels with no id at all.
    """
    if flat.shape[0] == 1:
        return [None]
    nonzero = flat != 0
    any_fg = nonzero.any(axis=0)
    masks: list[np.ndarray | None] = [nonzero[0] | ~any_fg]
    masks.extend(nonzero[c] for c in range(1, flat.shape[0]))
    return masks


def _and(a: np.ndarray | None, b: np.ndarray | None, n: int) -> np.ndarray:
    if a is None and b is None:
        return np.ones(n, bool)
    if a is None:
        return b  # type: ignore[return-value]
    if b is None:
        return a
    return a & b


def _count_pairs(a: np.ndarray, b: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Unique (a, b) pairs of two equally long id vectors and their counts, sorted by (a, b)."""
    if a.size == 0:
        return np.zeros(0, _ID), np.zeros(0, _ID), np.zeros(0, _COUNT)
    a_max, b_max = int(a.max()), int(b.max())
    if a_max < 2**32 and b_max < 2**32:
        # one sort of a packed 64-bit key is the fast path for every realistic block
        key = (a.astype(_ID) << _ID(32)) | b.astype(_ID)
        u, c = np.unique(key, return_counts=True)
        return u >> _ID(32), u & _ID(0xFFFFFFFF), c.astype(_COUNT)
    return _sum_by_pair(a.astype(_ID), b.astype(_ID), np.ones(a.size, _COUNT))


def _sum_by_pair(g: np.ndarray, p: np.ndarray, c: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    g, p, c = g.astype(_ID, copy=False), p.astype(_ID, copy=False), c.astype(_COUNT, copy=False)
    if g.size == 0:
        return g, p, c
    order = np.lexsort((p, g))
    g, p, c = g[order], p[order], c[order]
    start = np.ones(g.size, bool)
    start[1:] = (g[1:] != g[:-1]) | (p[1:] != p[:-1])
    idx = np.flatnonzero(start)
    return g[idx], p[idx], np.add.reduceat(c, idx)


def _sum_by_id(ids: np.ndarray, c: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    ids, c = ids.astype(_ID, copy=False), c.astype(_COUNT, copy=False)
    if ids.size == 0:
        return ids, c
    order = np.argsort(ids, kind="stable")
    ids, c = ids[order], c[order]
    start = np.ones(ids.size, bool)
    start[1:] = ids[1:] != ids[:-1]
    idx = np.flatnonzero(start)
    return ids[idx], np.add.reduceat(c, idx)


def _sizes(flat: np.ndarray, valid: list[np.ndarray | None], pair_ids: np.ndarray, pair_count: np.ndarray,
           name: str, both_flat: bool) -> tuple[np.ndarray, np.ndarray]:
    if both_flat:
        # both flat: each voxel is in exactly one pair, so the sizes are the pair marginals
        return _sum_by_id(pair_ids, pair_count)
    _check_distinct_per_voxel(flat, name)
    ids, counts = [], []
    for c in range(flat.shape[0]):
        v = flat[c][valid[c]] if valid[c] is not None else flat[c]
        u, n = np.unique(v, return_counts=True)
        ids.append(u.astype(_ID))
        counts.append(n.astype(_COUNT))
    return _sum_by_id(np.concatenate(ids), np.concatenate(counts))


def _check_distinct_per_voxel(flat: np.ndarray, name: str) -> None:
    """An id may sit in several channels (the assembly puts an instance's overlap voxels in channel 1),
    but never twice at one voxel: that would count the voxel twice."""
    for c in range(flat.shape[0]):
        for d in range(c + 1, flat.shape[0]):
            same = (flat[c] == flat[d]) & (flat[c] != 0)
            if same.any():
                dup = int(flat[c][np.flatnonzero(same)[0]])
                raise InputDataError(f"{name}: id {dup} appears twice at one voxel (channels {c} and {d}); a "
                                     "voxel lists each of its instances once")


def canonical_stack(stack: np.ndarray, name: str = "labels") -> np.ndarray:
    """The same labelling with every instance in one channel (ids unique across channels).

    Instances are given channels by greedy colouring (in id order) of the graph of instances that share
    a voxel, so the result has as few channels as that colouring needs. A stack whose ids are already
    unique across channels is returned unchanged.

    Examples
    --------
    >>> s = np.array([[[[1, 1, 2]]], [[[0, 2, 0]]]])   # instance 2 spills into channel 1 at one voxel
    >>> canonical_stack(s)[:, 0, 0].tolist()
    [[1, 1, 0], [0, 2, 2]]
    """
    stack = as_channel_stack(stack, name)
    if stack.shape[0] == 1:
        return stack
    flat = stack.reshape(stack.shape[0], -1)
    _check_distinct_per_voxel(flat, name)
    per_channel = [np.unique(flat[c][flat[c] != 0]) for c in range(flat.shape[0])]
    everything = np.concatenate(per_channel)
    if np.unique(everything).size == everything.size:
        return stack
    ids = np.unique(everything)
    neighbours: dict[int, set[int]] = {int(i): set() for i in ids}
    for c in range(flat.shape[0]):
        for d in range(c + 1, flat.shape[0]):
            both = (flat[c] != 0) & (flat[d] != 0)
            for a, b in np.unique(np.stack([flat[c][both], flat[d][both]], 1), axis=0).tolist():
                neighbours[a].add(b)
                neighbours[b].add(a)
    colour = np.zeros(ids.size, np.int64)
    for k, i in enumerate(ids.tolist()):
        taken = {int(colour[np.searchsorted(ids, j)]) for j in neighbours[i] if j < i}
        colour[k] = next(c for c in range(len(taken) + 1) if c not in taken)
    out = np.zeros((int(colour.max()) + 1, flat.shape[1]), stack.dtype)
    for c in range(flat.shape[0]):
        nz = np.flatnonzero(flat[c])
        values = flat[c][nz]
        out[colour[np.searchsorted(ids, values)], nz] = values
    return out.reshape((out.shape[0],) + stack.shape[1:])


def _first_duplicate(ids: np.ndarray) -> int:
    s = np.sort(ids)
    return int(s[np.flatnonzero(s[1:] == s[:-1])[0]])


def _lookup(ids: np.ndarray, values: np.ndarray, key: int) -> int:
    i = int(np.searchsorted(ids, key))
    return int(values[i]) if i < ids.size and int(ids[i]) == key else 0


def _set_background(ids: np.ndarray, sizes: np.ndarray, n_bg: int) -> tuple[np.ndarray, np.ndarray]:
    """Drop empty instances and set the size of id 0 to ``n_bg`` (dropping id 0 when it is 0)."""
    keep = (sizes > 0) & (ids != 0)
    ids, sizes = ids[keep], sizes[keep]
    if n_bg > 0:
        ids = np.concatenate([np.zeros(1, _ID), ids])
        sizes = np.concatenate([np.array([n_bg], _COUNT), sizes])
    return ids, sizes
