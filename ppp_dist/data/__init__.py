"""Data for tests, demos and benchmarks: the common ``Sample`` type, the FlyLight sample, synthetic scenes.

A :class:`Sample` is what every loader and generator here returns:

* ``raw`` — (C, Z, Y, X) float32 in [0, 1].
* ``instances`` — (K, Z, Y, X) uint16 *channel stack*. Each channel holds instance ids (0 = background);
  an id occurs in exactly one channel; a voxel may be non-zero in several channels (overlapping
  instances, as in FlyLight or BBBC010 worms). Flat, non-overlapping label images have K = 1.

2D data is 3D with Z = 1. Heavy submodules (zarr, scipy) are imported lazily: ``from ppp_dist.data import
load_flylight`` works, but ``import ppp_dist.data`` alone costs only NumPy.
"""

from __future__ import annotations

import importlib
import logging
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import numpy as np

from ppp_dist.errors import InputDataError

logger = logging.getLogger(__name__)

__all__ = [
    "Sample",
    "channel_stack_from_flat",
    "instance_ids",
    "instance_masks",
    # lazily imported from submodules:
    "load_flylight",
    "flylight_path",
    "crossing_tubes_3d",
    "crossing_worms_2d",
    "touching_nuclei_2d",
    "touching_nuclei_3d",
    "make_scene",
    "Scene",
    "write_synthetic_volume",
    "SyntheticVolume",
]

_LAZY = {
    "load_flylight": "ppp_dist.data.flylight",
    "flylight_path": "ppp_dist.data.flylight",
    "crossing_tubes_3d": "ppp_dist.data.synthetic",
    "crossing_worms_2d": "ppp_dist.data.synthetic",
    "touching_nuclei_2d": "ppp_dist.data.synthetic",
    "touching_nuclei_3d": "ppp_dist.data.synthetic",
    "make_scene": "ppp_dist.data.synthetic",
    "Scene": "ppp_dist.data.synthetic",
    "write_synthetic_volume": "ppp_dist.data.writer",
    "SyntheticVolume": "ppp_dist.data.writer",
}


def __getattr__(name: str) -> Any:
    # PEP 562 lazy re-export: keeps `import ppp_dist.data` cheap and avoids import cycles,
    # because the submodules import Sample from this module.
    if name in _LAZY:
        return getattr(importlib.import_module(_LAZY[name]), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


@dataclass(frozen=True, eq=False)
class Sample:
    """One image volume with its instance ground truth.

    Parameters
    ----------
    raw
        (C, Z, Y, X) float32, values in [0, 1] (not checked: that would read the whole array).
    instances
        (K, Z, Y, X) uint16 channel stack of instance ids, 0 = background; ids are unique across
        channels; several channels may be non-zero at one voxel (overlap).
    name
        Short human-readable description, e.g. ``"flylight JRC_SS05008"`` or ``"tubes seed=0"``.

    Raises
    ------
    InputDataError
        If the arrays have the wrong dimensionality or dtype, or their spatial shapes differ.
    """

    raw: np.ndarray
    instances: np.ndarray
    name: str = ""

    def __post_init__(self) -> None:
        problems = []
        if self.raw.ndim != 4 or self.raw.dtype != np.float32:
            problems.append(f"raw must be a (C, Z, Y, X) float32 array, got {self.raw.dtype} "
                            f"with shape {self.raw.shape}")
        if self.instances.ndim != 4 or self.instances.dtype != np.uint16:
            problems.append(f"instances must be a (K, Z, Y, X) uint16 array, got "
                            f"{self.instances.dtype} with shape {self.instances.shape}")
        if not problems and self.raw.shape[1:] != self.instances.shape[1:]:
            problems.append(f"raw spatial shape {self.raw.shape[1:]} differs from instances "
                            f"spatial shape {self.instances.shape[1:]}")
        if problems:
            raise InputDataError(f"Sample {self.name!r}: " + "; ".join(problems))

    @property
    def spatial_shape(self) -> tuple[int, int, int]:
        """(Z, Y, X) in voxels."""
        return tuple(int(s) for s in self.raw.shape[1:])  # type: ignore[return-value]

    @property
    def num_channels(self) -> int:
        """C, the number of raw channels."""
        return int(self.raw.shape[0])

    @property
    def num_layers(self) -> int:
        """K, the number of instance channels."""
        return int(self.instances.shape[0])

    @property
    def is_2d(self) -> bool:
        """True when Z = 1."""
        return self.raw.shape[1] == 1


def channel_stack_from_flat(labels: np.ndarray) -> np.ndarray:
    """Turn a flat label image into a one-channel instance stack.

    Parameters
    ----------
    labels
        (Z, Y, X) or (Y, X) non-negative integer ids, 0 = background, max 65535.

    Returns
    -------
    np.ndarray
        (1, Z, Y, X) uint16; a 2D input gets Z = 1.

    Examples
    --------
    >>> channel_stack_from_flat(np.array([[0, 2], [2, 5]])).shape
    (1, 1, 2, 2)
    """
    labels = np.asarray(labels)
    if labels.ndim == 2:
        labels = labels[np.newaxis]
    if labels.ndim != 3:
        raise InputDataError(f"flat labels must be (Z, Y, X) or (Y, X), got shape {labels.shape}")
    if not (np.issubdtype(labels.dtype, np.integer) or labels.dtype == bool):
        raise InputDataError(f"flat labels must have an integer dtype, got {labels.dtype}")
    if labels.size and (labels.min() < 0 or labels.max() > np.iinfo(np.uint16).max):
        raise InputDataError(f"flat label ids must lie in [0, 65535], got [{labels.min()}, "
                             f"{labels.max()}]; relabel consecutively first")
    return labels.astype(np.uint16)[np.newaxis]


def _check_stack(instances: np.ndarray) -> None:
    if instances.ndim != 4:
        raise InputDataError(f"instances must be a (K, Z, Y, X) channel stack, got shape "
                             f"{instances.shape}; use channel_stack_from_flat for flat labels")


def instance_ids(instances: np.ndarray) -> np.ndarray:
    """Sorted non-zero ids present in a channel stack.

    Parameters
    ----------
    instances
        (K, Z, Y, X) integer channel stack.

    Returns
    -------
    np.ndarray
        1D array of the stack's dtype, ascending, without 0.
    """
    _check_stack(instances)
    ids = [np.unique(channel) for channel in instances]
    merged = np.unique(np.concatenate(ids)) if ids else np.zeros(0, instances.dtype)
    return merged[merged != 0]


def instance_masks(instances: np.ndarray) -> Iterator[tuple[int, np.ndarray]]:
    """Yield ``(id, mask)`` for every instance, in ascending id order, one mask at a time.

    Only one (Z, Y, X) bool mask exists at a time, so this is safe for large stacks; collect with
    ``dict(instance_masks(stack))`` when memory allows. An id found in several channels (which a valid
    stack never has) yields the union of its channels.

    Parameters
    ----------
    instances
        (K, Z, Y, X) integer channel stack.

    Yields
    ------
    tuple[int, np.ndarray]
        The id and its (Z, Y, X) bool mask.
    """
    _check_stack(instances)
    per_channel = [set(np.unique(channel).tolist()) - {0} for channel in instances]
    for inst_id in sorted(set().union(*per_channel)):
        mask = np.zeros(instances.shape[1:], dtype=bool)
        for channel, ids in zip(instances, per_channel):
            if inst_id in ids:
                mask |= channel == inst_id
        yield int(inst_id), mask
