"""Patch targets and numinst targets from ground-truth instances (ppp_reference §1.2).

This is the reference implementation; a torch version used in training is tested equal to it.
"""

from __future__ import annotations

import numpy as np
from numba import njit, prange

from ppp_dist.errors import InputDataError
from ppp_dist.ops._geometry import check_patch_shape, window_positions


def _label_stack(instances: np.ndarray) -> np.ndarray:
    """The labels as a C-contiguous (K, Z, Y, X) stack in their own integer dtype (checked, not converted)."""
    inst = np.asarray(instances)
    if inst.dtype.kind not in "ui":
        raise InputDataError(f"instances must be an integer label array; got dtype {inst.dtype}")
    if inst.ndim == 3:
        inst = inst[None]
    if inst.ndim != 4:
        raise InputDataError(
            f"instances must be a flat label image (Z, Y, X) or a channel stack (K, Z, Y, X); got shape {inst.shape}")
    if inst.dtype.kind == "i" and inst.size and inst.min() < 0:
        raise InputDataError("instances must not contain negative labels")
    return np.ascontiguousarray(inst)


def _as_channel_stack(instances: np.ndarray) -> np.ndarray:
    """:func:`_label_stack` as int64 (the dtype the whole-volume kernels are compiled for)."""
    return _label_stack(instances).astype(np.int64, copy=False)


@njit(parallel=True, cache=True)
def _targets(seg, offsets, out):
    k, nz, ny, nx = seg.shape
    for e in prange(len(offsets)):
        dz, dy, dx = offsets[e, 0], offsets[e, 1], offsets[e, 2]
        for z in range(nz):
            z2 = z + dz
            if z2 < 0 or z2 >= nz:
                continue
            for y in range(ny):
                y2 = y + dy
                if y2 < 0 or y2 >= ny:
                    continue
                for x in range(nx):
                    x2 = x + dx
                    if x2 < 0 or x2 >= nx:
                        continue
                    for c in range(k):
                        s = seg[c, z, y, x]
                        if s != 0 and s == seg[c, z2, y2, x2]:
                            out[e, z, y, x] = 1
                            break


def patch_targets(instances: np.ndarray, patch_shape) -> np.ndarray:
    """(P, Z, Y, X) uint8 patch targets.

    Channel e (C-order window position, offset d = pos - h) at voxel v is 1 iff some channel c has
    ``seg[c, v] == seg[c, v + d] != 0``; offsets leaving the array read background. ``instances`` is a
    channel stack (K, Z, Y, X) (overlaps: non-zero in several channels) or a flat label image (Z, Y, X).
    """
    ps = check_patch_shape(patch_shape)
    seg = _as_channel_stack(instances)
    offsets = window_positions(ps) - np.asarray(ps, dtype=np.int64) // 2
    out = np.zeros((len(offsets),) + seg.shape[1:], dtype=np.uint8)
    _targets(seg, offsets, out)
    return out


@njit(cache=True, inline="always")
def _fill_patch(seg, offsets, z, y, x, value, row):
    """``row[e] = value`` where some channel has the same non-zero label at (z, y, x) and at (z, y, x) +
    offsets[e] (inside the array)."""
    k, nz, ny, nx = seg.shape
    for e in range(len(offsets)):
        z2, y2, x2 = z + offsets[e, 0], y + offsets[e, 1], x + offsets[e, 2]
        if z2 < 0 or z2 >= nz or y2 < 0 or y2 >= ny or x2 < 0 or x2 >= nx:
            continue
        for c in range(k):
            s = seg[c, z, y, x]
            if s != 0 and s == seg[c, z2, y2, x2]:
                row[e] = value
                break


@njit(parallel=True, cache=True)
def _targets_inner(seg, offsets, begin, value, out):
    """``out[e, v] = value`` where ``patch_targets(seg)[e, begin + v]`` is 1, for the voxels v of ``out``."""
    k, nz, ny, nx = seg.shape
    _, oz, oy, ox = out.shape
    for zi in prange(oz):
        z = zi + begin[0]
        for yi in range(oy):
            y = yi + begin[1]
            for xi in range(ox):
                x = xi + begin[2]
                background = True
                for c in range(k):
                    if seg[c, z, y, x] != 0:
                        background = False
                        break
                if background:  # no channel: every entry of its patch is 0
                    continue
                _fill_patch(seg, offsets, z, y, x, value, out[:, zi, yi, xi])


def patch_targets_box(instances: np.ndarray, patch_shape, begin, shape, value: int = 1) -> np.ndarray:
    """``patch_targets(instances)[:, box] * value`` for the box at ``begin`` of ``shape``, computing only that
    box and skipping its background voxels (their patches are all 0): (P, *shape) uint8.

    The labels must cover the box grown by h wherever a neighbour exists (as ``patch_targets`` sees them).
    """
    ps = check_patch_shape(patch_shape)
    seg = _label_stack(instances)
    offsets = window_positions(ps) - np.asarray(ps, dtype=np.int64) // 2
    begin = np.asarray(begin, dtype=np.int64)
    shape = tuple(int(s) for s in shape)
    if (begin < 0).any() or any(b + s > n for b, s, n in zip(begin, shape, seg.shape[1:])):
        raise ValueError(f"box at {tuple(begin)} of shape {shape} leaves the labels {seg.shape[1:]}")
    out = np.zeros((len(offsets),) + shape, dtype=np.uint8)
    _targets_inner(seg, offsets, begin, np.uint8(value), out)
    return out


@njit(parallel=True, cache=True)
def _target_rows(seg, offsets, coords, value, out):
    """``out[i, e] = value`` where ``patch_targets(seg)[e, coords[i]]`` is 1."""
    for i in prange(coords.shape[0]):
        _fill_patch(seg, offsets, coords[i, 0], coords[i, 1], coords[i, 2], value, out[i])


def patch_target_rows(instances: np.ndarray, patch_shape, coords: np.ndarray, value: int = 1) -> np.ndarray:
    """``patch_targets(instances)[:, coords].T * value`` for the voxels ``coords`` (N, 3) only: (N, P) uint8.

    What a block needs of oracle patches (the rows of its foreground voxels), without the (P, Z, Y, X) array.
    """
    ps = check_patch_shape(patch_shape)
    seg = _label_stack(instances)
    offsets = window_positions(ps) - np.asarray(ps, dtype=np.int64) // 2
    coords = np.ascontiguousarray(coords, dtype=np.int64).reshape(-1, 3)
    if len(coords) and ((coords < 0).any() or (coords >= np.asarray(seg.shape[1:])).any()):
        raise ValueError(f"coords leave the labels {seg.shape[1:]}")
    out = np.zeros((len(coords), len(offsets)), dtype=np.uint8)
    _target_rows(seg, offsets, coords, np.uint8(value), out)
    return out


def numinst_target(instances: np.ndarray, max_num_inst: int = 2) -> np.ndarray:
    """(Z, Y, X) uint8: number of non-zero channels per voxel, clamped to ``max_num_inst``."""
    if int(max_num_inst) < 1:
        raise ValueError(f"max_num_inst must be >= 1; got {max_num_inst}")
    seg = _label_stack(instances)
    return np.minimum((seg != 0).sum(axis=0), int(max_num_inst)).astype(np.uint8)


def numinst_onehot(numinst: np.ndarray, n_classes: int = 3) -> np.ndarray:
    """(n_classes, Z, Y, X) float32 one-hot probabilities of a numinst map (the oracle prediction)."""
    numinst = np.minimum(np.asarray(numinst), n_classes - 1)
    return np.stack([(numinst == k) for k in range(n_classes)]).astype(np.float32)
