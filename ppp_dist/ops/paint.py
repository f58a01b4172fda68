"""Painting of instances from the selected patches by accumulated votes (ppp_reference §4.8, bug 8).

Every foreground voxel takes the instance with the largest summed patch value (or count) over the
selected patches that cover it with value > threshold (ties -> smaller id); voxels with numinst >= 2
keep up to max_num_inst instances in channels 0, 1, ... by decreasing vote. Background stays 0.
Halo: a voxel reads the selected patches centred within h, whose selected status needs inputs on
core + 8h (6h with the single-pass consensus; docs/assembly.md), plus the global node -> instance table.
"""

from __future__ import annotations

import numpy as np

from ppp_dist.ops import _graph_kernels as _g
from ppp_dist.ops._geometry import check_threshold, window_positions
from ppp_dist.ops.consensus import PatchField

ACCUMULATE = ("sum", "count")


def _checked(patch_threshold: float, max_num_inst: int, accumulate: str) -> tuple[float, int]:
    th = check_threshold("patch_threshold", patch_threshold)
    if accumulate not in ACCUMULATE:
        raise ValueError(f"accumulate must be one of {ACCUMULATE}; got {accumulate!r}")
    k = int(max_num_inst)
    if k < 1:
        raise ValueError(f"max_num_inst must be >= 1; got {max_num_inst}")
    return th, k


def paint_instances(field: PatchField, selected: np.ndarray, labels: np.ndarray, *, patch_threshold: float = 0.5,
                    max_num_inst: int = 2, accumulate: str = "sum") -> np.ndarray:
    """(max_num_inst, Z, Y, X) uint32 labels; ``labels[i]`` (>= 1) is the instance of selected[i]."""
    th, k = _checked(patch_threshold, max_num_inst, accumulate)
    selected = np.asarray(selected, dtype=np.int64)
    labels = np.asarray(labels, dtype=np.int64)
    if labels.shape != selected.shape or (labels.size and labels.min() < 1):
        raise ValueError("labels must hold one instance id >= 1 per selected patch")
    shape = field.numinst.shape
    vi = field.candidates[selected]
    sel_pad = field.grid.index_volume(field.voter_coords[vi])
    nlab = np.where(field.vkind == 2, k, 1).astype(np.int64)
    flat = np.ravel_multi_index(tuple(field.voter_coords.T), shape).astype(np.int64)
    out = np.zeros((k, int(np.prod(shape))), dtype=np.uint32)
    _g.paint(field.voter_pflat, flat, nlab, field.woff, sel_pad, vi, labels, field.vrows, th,
             accumulate == "count", out)
    return out.reshape((k,) + tuple(shape))


def paint_core(numinst: np.ndarray, centres: np.ndarray, rows: np.ndarray, labels: np.ndarray, patch_shape, *,
               patch_threshold: float = 0.5, max_num_inst: int = 2, accumulate: str = "sum") -> np.ndarray:
    """:func:`paint_instances` of one block core from the selected patches' rows alone (no patch field).

    Parameters
    ----------
    numinst : (Z, Y, X) uint8 0/1/2 of the core.
    centres : (N, 3) int64 centres of the selected patches centred in the core grown by h (core coordinates:
        from -h to core + h - 1); every patch that covers a core voxel must be listed.
    rows : (N, P) float32 patch values (as ``prepare_field`` converts them).
    labels : (N,) int64 instance id (>= 1) of each patch.

    Returns
    -------
    (max_num_inst, Z, Y, X) uint32: the labels ``paint_instances`` gives these voxels on the whole volume,
    bit for bit (the same sums in the same order: window positions ascending).
    """
    th, k = _checked(patch_threshold, max_num_inst, accumulate)
    numinst = np.asarray(numinst)
    centres = np.asarray(centres, dtype=np.int64).reshape(-1, 3)
    rows = np.ascontiguousarray(rows, dtype=np.float32)
    labels = np.asarray(labels, dtype=np.int64)
    p = int(np.prod(patch_shape))
    if rows.shape != (len(centres), p) or labels.shape != (len(centres),):
        raise ValueError(f"rows must be (N, {p}) and labels (N,) for N = {len(centres)} centres")
    if labels.size and labels.min() < 1:
        raise ValueError("labels must hold one instance id >= 1 per selected patch")
    h = np.asarray(patch_shape, dtype=np.int64) // 2
    box = np.asarray(numinst.shape, dtype=np.int64) + 2 * h
    inside = ((centres >= -h) & (centres < box - h)).all(axis=1) if len(centres) else np.zeros(0, bool)
    if not inside.all():
        raise ValueError("a centre lies further than h outside the core")
    strides = np.array([box[1] * box[2], box[2], 1], dtype=np.int64)
    sel_index = np.full(int(np.prod(box)), -1, dtype=np.int64)
    sel_index[(centres + h) @ strides] = np.arange(len(centres))
    voxels = np.argwhere(numinst >= 1).astype(np.int64)
    nlab = np.where(numinst[tuple(voxels.T)] >= 2, k, 1).astype(np.int64)
    out = np.zeros((k, len(voxels)), dtype=np.uint32)
    dpos = window_positions(tuple(int(s) for s in patch_shape)) - h
    _g.paint_rows(voxels + h, nlab, np.ascontiguousarray(dpos), sel_index, strides, rows, labels, th,
                  accumulate == "count", out)
    labelled = np.zeros((k,) + numinst.shape, dtype=np.uint32)
    labelled[(slice(None), *voxels.T)] = out
    return labelled
