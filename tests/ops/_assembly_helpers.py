"""Fixtures data and comparisons for the assembly tests (tiny, seeded, in memory)."""

from __future__ import annotations

import numpy as np
from scipy import sparse
from scipy.sparse import csgraph

from ppp_dist.ops.patches import numinst_onehot, numinst_target, patch_targets


def crossing_tubes_3d(shape=(36, 36, 36), radius=2):
    """Three tubes (one channel each): along x, along y (crossing the first), and a diagonal."""
    z, y, x = np.ogrid[:shape[0], :shape[1], :shape[2]]
    c = [s // 2 for s in shape]
    inst = np.zeros((3,) + tuple(shape), dtype=np.uint16)
    inst[0][((z - c[0]) ** 2 + (y - c[1]) ** 2 <= radius ** 2) & (x >= 3) & (x < shape[2] - 3)] = 1
    inst[1][((z - c[0]) ** 2 + (x - c[2]) ** 2 <= radius ** 2) & (y >= 3) & (y < shape[1] - 3)] = 2
    d = ((z - x) ** 2 + (y - (c[1] - 7)) ** 2 * 2) <= 2 * radius ** 2
    inst[2][d & (z >= 3) & (z < shape[0] - 3)] = 3
    return inst


def crossing_worms_2d(shape=(1, 96, 96), width=3, seed=0):
    """Two sine-shaped worms of constant width crossing each other, one per channel."""
    rng = np.random.default_rng(seed)
    _, ny, nx = shape
    inst = np.zeros((2,) + tuple(shape), dtype=np.uint16)
    yy, xx = np.mgrid[:ny, :nx]
    for k in range(2):
        phase = rng.uniform(0, 2 * np.pi)
        t = np.linspace(8, (nx if k == 0 else ny) - 8, 400)
        off = (ny if k == 0 else nx) / 2 + 12 * np.sin(t / 14 + phase)
        pts = np.stack([off, t], 1) if k == 0 else np.stack([t, off], 1)
        m = np.zeros((ny, nx), bool)
        for py, px in pts:
            m |= (yy - py) ** 2 + (xx - px) ** 2 <= (width / 2) ** 2
        inst[k, 0][m] = k + 1
    return inst


def oracle(instances, patch_shape, max_num_inst=2):
    inst = instances if instances.ndim == 4 else instances[None]
    patches = patch_targets(inst, patch_shape).astype(np.float32)
    return patches, numinst_onehot(numinst_target(inst, max_num_inst))


def split_channels(instances, patch_shape):
    """Reference partition for oracle runs (docs/assembly.md, "Oracle exactness").

    1. Each channel's instance is split into pieces under patch-window adjacency (two of its voxels
       are adjacent iff at most h apart per axis): patches only see ps-local connectivity.
    2. A voxel keeps a piece only if a non-overlap voxel of that piece lies within h of it: only patches
       centred on non-overlap voxels can be selected, and an overlap voxel deep inside a crossing is in
       the window of no such patch of that instance. Pieces without non-overlap voxels vanish.
    Returns a list of bool masks, one per piece."""
    from scipy import ndimage

    inst = instances if instances.ndim == 4 else instances[None]
    h = np.asarray(patch_shape) // 2
    single = (inst != 0).sum(axis=0) == 1
    pieces = []
    for ch in inst:
        for val in np.unique(ch[ch != 0]):
            mask = ch == val
            coords = np.argwhere(mask)
            index = np.full(mask.shape, -1, dtype=np.int64)
            index[tuple(coords.T)] = np.arange(len(coords))
            rows, cols = [], []
            pad = np.pad(index, [(int(x), int(x)) for x in h], constant_values=-1)
            for dz in range(-h[0], h[0] + 1):
                for dy in range(-h[1], h[1] + 1):
                    for dx in range(-h[2], h[2] + 1):
                        nb = pad[tuple(coords[:, a] + h[a] + d for a, d in enumerate((dz, dy, dx)))]
                        ok = nb >= 0
                        rows.append(np.arange(len(coords))[ok])
                        cols.append(nb[ok])
            r, c = np.concatenate(rows), np.concatenate(cols)
            graph = sparse.coo_matrix((np.ones(len(r)), (r, c)), shape=(len(coords),) * 2)
            _, comp = csgraph.connected_components(graph, directed=False)
            for k in range(comp.max() + 1):
                piece = np.zeros(mask.shape, dtype=bool)
                piece[tuple(coords[comp == k].T)] = True
                seen = ndimage.binary_dilation(piece & single, np.ones(tuple(2 * h + 1), dtype=bool))
                if (piece & seen).any():
                    pieces.append(piece & seen)
    return pieces


def compare_to_pieces(labels, pieces):
    """Match output labels (K, Z, Y, X) to reference pieces (list of bool masks) one to one.

    Returns (n_wrong_voxels, info). A voxel is right iff its set of output labels, mapped to
    pieces, equals its set of pieces (truncated: voxels in more than K pieces must carry K of them).
    The mapping output label -> piece is taken from the piece each label overlaps most.
    """
    k = labels.shape[0]
    ref = np.zeros((len(pieces),) + labels.shape[1:], dtype=bool)
    for i, p in enumerate(pieces):
        ref[i] = p
    ids = np.unique(labels[labels > 0])
    mapping, best = {}, {}
    for lab in ids:
        m = (labels == lab).any(axis=0)
        ov = ref[:, m].sum(axis=1)
        p = int(np.argmax(ov))
        mapping[int(lab)] = p
        if ov[p] > best.get(p, (-1, 0))[0]:
            best[p] = (ov[p], int(lab))
    # a second label matched to the same piece is wrong everywhere
    mapping = {lab: (p if best[p][1] == lab else -2) for lab, p in mapping.items()}
    mapped = np.full(labels.shape, -1, dtype=np.int64)
    for lab, p in mapping.items():
        mapped[labels == lab] = p
    nref = ref.sum(axis=0)
    wrong = np.zeros(labels.shape[1:], dtype=bool)
    for i in range(len(pieces)):
        has = (mapped == i).any(axis=0)
        wrong |= has & ~ref[i]
        wrong |= ref[i] & ~has & (nref <= k)
    wrong |= (nref > k) & ((mapped >= 0).sum(axis=0) < k)
    wrong |= (nref == 0) & (labels > 0).any(axis=0)
    wrong |= (mapped == -2).any(axis=0)
    injective = -2 not in mapping.values()
    matched = len(set(mapping.values()) - {-2})
    return int(wrong.sum()), {"n_labels": len(ids), "n_pieces": len(pieces), "matched": matched,
                              "injective": injective}


def iou_per_instance(labels, instances):
    """Best IoU of every GT instance (channel value) against the output labels (any channel)."""
    inst = instances if instances.ndim == 4 else instances[None]
    out = []
    for ch in inst:
        for val in np.unique(ch[ch != 0]):
            g = ch == val
            cands = np.unique(labels[:, g])
            best = 0.0
            for lab in cands[cands > 0]:
                p = (labels == lab).any(axis=0)
                best = max(best, (g & p).sum() / (g | p).sum())
            out.append(best)
    return np.array(out)


def iou_per_piece(labels, pieces):
    """Best IoU of every reference piece (bool mask, ``split_channels``) against the output labels."""
    out = []
    for g in pieces:
        cands = np.unique(labels[:, g])
        best = 0.0
        for lab in cands[cands > 0]:
            p = (labels == lab).any(axis=0)
            best = max(best, (g & p).sum() / (g | p).sum())
        out.append(best)
    return np.array(out)
