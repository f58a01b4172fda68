"""Post-processing of (K, Z, Y, X) label stacks: small-instance removal, consecutive ids, dilation."""

from __future__ import annotations

import numpy as np
from scipy import ndimage

from ppp_dist.errors import InputDataError


def _check_stack(labels: np.ndarray) -> np.ndarray:
    """The (K, Z, Y, X) integer stack, checked as ``evaluate`` checks labels (``as_channel_stack``): negative
    ids are refused; any id up to 2^64 - 1 is fine (counting never allocates by the largest id)."""
    from ppp_dist.ops.overlap_table import as_channel_stack

    labels = np.asarray(labels)
    if labels.ndim != 4 or labels.dtype.kind not in "ui":
        raise InputDataError(f"labels must be an integer (K, Z, Y, X) channel stack; got {labels.dtype} {labels.shape}")
    return as_channel_stack(labels)


def instance_sizes(labels: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """``(ids, counts)``: every id present (ascending, 0 included if present) and its voxel count over all
    channels (a voxel counts once per id). Memory is O(voxels), whatever the ids' values."""
    labels = _check_stack(labels)
    return np.unique(labels.ravel(), return_counts=True)


def remove_small_and_relabel(labels: np.ndarray, min_size: int = 0) -> np.ndarray:
    """Drop instances with <= min_size voxels, compact ids to 1..n keeping their order, and move
    surviving labels of a voxel to the lowest channels."""
    labels = _check_stack(labels)
    ids, inverse, sizes = np.unique(labels.ravel(), return_inverse=True, return_counts=True)
    keep = (sizes > int(min_size)) & (ids != 0)
    lut = np.zeros(len(ids), dtype=np.uint32)
    lut[keep] = np.arange(1, int(keep.sum()) + 1, dtype=np.uint32)
    out = lut[inverse.reshape(labels.shape)]
    if out.shape[0] > 1:
        # stable compaction: non-zero labels first, in their channel order
        order = np.argsort(out == 0, axis=0, kind="stable")
        out = np.take_along_axis(out, order, axis=0)
    return out


def dilate(labels: np.ndarray, iterations: int = 1) -> np.ndarray:
    """Grow channel 0 into background by face-adjacency, never overwriting labels; a background voxel
    touching several ids takes the smallest."""
    labels = _check_stack(labels).copy()
    two_d = labels.shape[1] == 1
    struct = ndimage.generate_binary_structure(3, 1)
    if two_d:
        struct[0] = struct[2] = False
    big = np.iinfo(labels.dtype).max
    for _ in range(int(iterations)):
        lab = labels[0]
        grown = ndimage.grey_erosion(np.where(lab == 0, big, lab), footprint=struct, mode="constant", cval=big)
        fill = (lab == 0) & (grown != big)
        lab[fill] = grown[fill]
    return labels
