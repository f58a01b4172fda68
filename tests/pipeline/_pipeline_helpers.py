"""Oracle predictions in zarr and the whole-volume reference for the pipeline tests."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from ppp_dist.io.volumes import open_array, prepare_array
from ppp_dist.ops.assemble import assemble
from ppp_dist.ops.patches import numinst_onehot, numinst_target, patch_targets


def write_oracle(path: Path | str, instances: np.ndarray, patch_shape, chunks, max_num_inst: int = 2) -> str:
    """Oracle prediction group: patches = patch_targets x 255 (uint8), numinst = one-hot x 255 (uint8)."""
    inst = instances if instances.ndim == 4 else instances[None]
    patches = (patch_targets(inst, patch_shape) * np.uint8(255)).astype(np.uint8)
    onehot = np.rint(numinst_onehot(numinst_target(inst, max_num_inst)) * 255).astype(np.uint8)
    spatial = inst.shape[1:]
    chunks = tuple(min(c, s) for c, s in zip(chunks, spatial))
    group = str(path)
    for name, data in (("patches", patches), ("numinst", onehot)):
        arr = prepare_array(f"{group}/{name}", shape=data.shape, chunks=(data.shape[0],) + chunks, dtype="uint8",
                            axes="czyx")
        arr[...] = data
    return group


def whole_volume(group: str, settings) -> np.ndarray:
    """``ops.assemble`` on the whole stored prediction (the reference of block invariance)."""
    patches = np.asarray(open_array(f"{group}/patches")[...])
    numinst = np.asarray(open_array(f"{group}/numinst")[...])
    labels = assemble(patches, numinst, settings)
    return labels if settings.overlap_channels else labels[:1]


def write_prediction(path: Path | str, patches: np.ndarray, numinst: np.ndarray, chunks) -> str:
    """A prediction group from given arrays (uint8 value/255 or float16)."""
    group = str(path)
    spatial = patches.shape[1:]
    chunks = tuple(min(c, s) for c, s in zip(chunks, spatial))
    for name, data in (("patches", patches), ("numinst", numinst)):
        arr = prepare_array(f"{group}/{name}", shape=data.shape, chunks=(data.shape[0],) + chunks, dtype=data.dtype,
                            axes="czyx")
        arr[...] = data
    return group
