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
from ppp_dist.ops._geometry import check_threshold
from ppp_dist.ops.consensus import PatchField

ACCUMULATE = ("sum", "count")


def paint_instances(field: PatchField, selected: np.ndarray, labels: np.ndarray, *, patch_threshold: float = 0.5,
                    max_num_inst: int = 2, accumulate: str = "sum") -> np.ndarray:
    """(max_num_inst, Z, Y, X) uint32 labels; ``labels[i]`` (>= 1) is the instance of selected[i]."""
    th = check_threshold("patch_threshold", patch_threshold)
    if accumulate not in ACCUMULATE:
        raise ValueError(f"accumulate must be one of {ACCUMULATE}; got {accumulate!r}")
    k = int(max_num_inst)
    if k < 1:
        raise ValueError(f"max_num_inst must be >= 1; got {max_num_inst}")
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
