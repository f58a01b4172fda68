"""Patch-pair weights between selected patches (ppp_reference §4.6–4.7).

Pairs: every two selected patches whose centres differ by at most ``max_distance`` per axis, default
2 (ps - 1) = 4h: the largest distance at which a voxel of one window and a voxel of the other can
still be ps - 1 apart, i.e. share a consensus entry (a larger range adds nothing, a smaller one can
miss links: the original CPU path used ps and split tubes at crossings, §10 item 3). No self pairs.

Weight: mean consensus over all member pairs (u in support 1, w in support 2, u != w) that have
votes; support = non-overlap foreground voxels with patch > TH whose consensus with the patch centre
is positive (drops the stray voxels a noisy patch claims against everyone else; an oracle patch keeps
its whole support). Exact, no random thinning. Unlike the
original (§4.7), pairs inside the intersection of the two supports are *not* removed: our consensus
at a pair aggregates the votes of every patch covering it, not just of the two patches, so those
pairs are informative rather than trivially consistent (and removing them cut fragments smaller than
a patch off their neighbours, whose supports are identical). Pairs without votes never count (no
+ps / self-pair zeros). ``counts`` holds the number of pairs averaged (0 = no information).
Tier 1 edges average the pairs with primary consensus; an edge without any is tier 2 and averages
the pairs with fallback consensus (votes of overlap-centred patches only, see consensus.py).
Computed as W(i, j) = sum over u in S_i of B[u, j], B[u, j] = sum over w in S_j of cons(u, w):
O(N_members * (4h+1)^D * coverage + sum_i |S_i| * patches within 3h) instead of sum |S_i| |S_j|.
Halo: the edges whose first patch is in a core need the selected status of patches within 4h, the
consensus rows within 3h and the supports of patches within 4h: inputs on core + 11h (9h with the
single-pass consensus; docs/assembly.md).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from ppp_dist.ops import _graph_kernels as _g
from ppp_dist.ops import _vote_kernels as _k
from ppp_dist.ops._geometry import check_threshold
from ppp_dist.ops._schedule import schedule
from ppp_dist.ops.consensus import Consensus, PatchField, lookup_args


@dataclass(frozen=True)
class PatchGraph:
    nodes: np.ndarray  # (N,) candidate indices of the selected patches, ascending
    coords: np.ndarray  # (N, 3) int64 patch centres
    node_ids: np.ndarray  # (N,) int64 global linear index of the centre + 1
    pairs: np.ndarray  # (E, 2) int64 node indices, first < second
    weights: np.ndarray  # (E,) float32 mean consensus in [-1, 1]
    counts: np.ndarray  # (E,) int64 voxel pairs averaged (0 = no information)
    tiers: np.ndarray  # (E,) uint8 1 = primary consensus, 2 = fallback consensus only, 0 = none


def node_ids(coords: np.ndarray, origin=(0, 0, 0), global_shape=None) -> np.ndarray:
    """Global patch-centre ids: C-order linear index in the global volume + 1 (int64)."""
    coords = np.asarray(coords, dtype=np.int64) + np.asarray(origin, dtype=np.int64)
    if global_shape is None:
        global_shape = coords.max(axis=0) + 1 if len(coords) else (1, 1, 1)
    gs = np.asarray(global_shape, dtype=np.int64)
    return coords @ np.array([gs[1] * gs[2], gs[2], 1], dtype=np.int64) + 1


@dataclass(frozen=True)
class VoxelPatchSums:
    """B[u, j]: consensus sums/counts [primary, fallback] between member u and the support of selected j."""

    row_of: np.ndarray  # (N_m,) int64 row of each member, -1 if it is in no support
    ptr: np.ndarray  # CSR capacity over rows
    end: np.ndarray  # (rows,) end of each row's entries (ascending j), ptr[r] <= end[r] <= ptr[r + 1]
    sel: np.ndarray  # (nnz,) int64 selected index j (entries past ``end`` are undefined)
    val: np.ndarray  # (nnz, 2) float64
    num: np.ndarray  # (nnz, 2) int32

    def nbytes(self) -> int:
        return int(sum(a.nbytes for a in (self.row_of, self.ptr, self.end, self.sel, self.val, self.num)))


def voxel_patch_sums(field: PatchField, consensus: Consensus, sel_coords: np.ndarray, sup_ptr: np.ndarray,
                     sup_mem: np.ndarray) -> VoxelPatchSums:
    h = np.asarray(field.patch_shape, dtype=np.int64) // 2
    _, h2, lut, lstr, _, _ = lookup_args(field, consensus)
    jfirst = _g.first_support(sup_ptr, sup_mem, field.n_members)
    rows_mem = np.flatnonzero(jfirst >= 0).astype(np.int64)
    row_of = np.full(field.n_members, -1, dtype=np.int64)
    row_of[rows_mem] = np.arange(len(rows_mem))
    bw = np.array([4 * h[0] + 1, 4 * h[1] + 1, 8 * h[2] + 1], dtype=np.int64)
    pz, py, px = field.patch_shape
    # each support entry relative to its patch centre: box index (sup_rel) and window position (for the row starts)
    d = field.member_coords[sup_mem] - np.repeat(sel_coords, np.diff(sup_ptr), axis=0)
    sup_rel = (d[:, 0] * bw[1] + d[:, 1]) * bw[2] + d[:, 2]
    sup_pos = ((d[:, 0] + h[0]) * py + d[:, 1] + h[1]) * px + d[:, 2] + h[2]
    sup_rows = _k.window_row_starts(sup_ptr, sup_pos, px, pz * py)
    del d, sup_pos
    zyx = field.numinst.shape
    lines = sel_coords[:, 0] * zyx[1] + sel_coords[:, 1]
    line_ptr = np.searchsorted(lines, np.arange(zyx[0] * zyx[1] + 1)).astype(np.int64)
    nb_d = _box(2 * h)
    nb_d = nb_d[(nb_d != 0).any(axis=1)]
    img_zy = np.array(zyx[:2], dtype=np.int64)
    cap = _g.voxel_patch_capacity(rows_mem, field.member_coords, jfirst, line_ptr, img_zy, sel_coords, h)
    ptr = np.concatenate(([0], np.cumsum(cap))).astype(np.int64)
    # unused capacity is never written nor read (rows end at ``end``): np.empty maps no pages for it
    sel = np.empty(int(ptr[-1]), dtype=np.int64)
    val = np.empty((int(ptr[-1]), 2), dtype=np.float64)
    num = np.empty((int(ptr[-1]), 2), dtype=np.int32)
    end = np.empty(len(rows_mem), dtype=np.int64)
    _g.voxel_patch_sums(rows_mem, field.member_pflat, field.member_coords, field.mem_pad, nb_d @ field.grid.strides,
                        nb_d, jfirst, line_ptr, img_zy, sel_coords, sup_rel, sup_rows, h,
                        bw, h2, lut, lstr, consensus.values, consensus.counts, ptr, end, sel, val, num,
                        *schedule(len(rows_mem)))
    return VoxelPatchSums(row_of, ptr, end, sel, val, num)


def agreeing_supports(field: PatchField, consensus: Consensus, voter_index: np.ndarray, threshold: float):
    """CSR supports for the edge weights: member voxels u with patch(u) > threshold whose consensus with
    the patch centre is positive (and the centre itself, if its value is > threshold). Drops the stray voxels a
    noisy patch claims against the consensus of all others; an oracle patch keeps its whole support."""
    voter_index = np.asarray(voter_index, dtype=np.int64)
    centres = field.mem_pad[field.voter_pflat[voter_index]].astype(np.int64)
    return _k.support_lists(voter_index, centres, field.vrows, field.vm_ptr, field.vm_pos, field.vm_mem,
                            float(threshold), True, *lookup_args(field, consensus))


def _box(r: np.ndarray) -> np.ndarray:
    """(n, 3) int64 offsets of the box |d_i| <= r_i in C order."""
    g = np.meshgrid(*[np.arange(-int(x), int(x) + 1) for x in r], indexing="ij")
    return np.stack(g, axis=-1).reshape(-1, 3).astype(np.int64)


def patch_graph(field: PatchField, consensus: Consensus, selected: np.ndarray, *, patch_threshold: float = 0.5,
                max_distance=None, origin=(0, 0, 0), global_shape=None) -> PatchGraph:
    th = check_threshold("patch_threshold", patch_threshold)
    h = np.asarray(field.patch_shape, dtype=np.int64) // 2
    maxd = 4 * h if max_distance is None else np.broadcast_to(np.asarray(max_distance, dtype=np.int64), (3,))
    if (maxd < 0).any() or (maxd > 4 * h).any():
        raise ValueError(f"max_distance must be within [0, 2 (ps - 1)] = [0, {tuple(4 * h)}] per axis; "
                         f"got {max_distance}")
    selected = np.asarray(selected, dtype=np.int64)
    vi = field.candidates[selected]
    coords = field.voter_coords[vi]
    g = np.stack(np.meshgrid(*[np.arange(-m, m + 1) for m in maxd], indexing="ij"), axis=-1).reshape(-1, 3)
    pos = (g[:, 0] > 0) | ((g[:, 0] == 0) & (g[:, 1] > 0)) | ((g[:, 0] == 0) & (g[:, 1] == 0) & (g[:, 2] > 0))
    box_off = g[pos] @ field.grid.strides
    sel_pad = field.grid.index_volume(coords)
    pairs = _g.candidate_pairs(field.voter_pflat[vi], sel_pad, box_off)
    sup_ptr, sup_mem = agreeing_supports(field, consensus, vi, th)
    weights = np.zeros(len(pairs), dtype=np.float32)
    counts = np.zeros(len(pairs), dtype=np.int64)
    tiers = np.zeros(len(pairs), dtype=np.uint8)
    if len(pairs):
        b = voxel_patch_sums(field, consensus, coords, sup_ptr, sup_mem)
        pair_ptr = np.searchsorted(pairs[:, 0], np.arange(len(vi) + 1)).astype(np.int64)
        _g.pair_weights(pair_ptr, pairs, sup_ptr, sup_mem, b.row_of, b.ptr, b.end, b.sel, b.val, b.num, weights, counts,
                        tiers, *schedule(len(vi)))
    # candidate_pairs lists (i, j) by ascending i, then ascending j (box offsets in C order, selected
    # patches in linear order): sorted already; the check costs a fraction of a sort
    key = pairs[:, 0] * max(1, len(vi)) + pairs[:, 1]
    if not (key[1:] > key[:-1]).all():
        order = np.argsort(key, kind="stable")
        pairs, weights, counts, tiers = pairs[order], weights[order], counts[order], tiers[order]
    return PatchGraph(selected, coords, node_ids(coords, origin, global_shape if global_shape is not None
                                                 else field.numinst.shape), pairs, weights, counts, tiers)
