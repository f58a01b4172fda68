"""Stage label (in one process): predicted patches + numinst in a zarr group -> instances zarr.

The prediction group holds ``patches`` (P, Z, Y, X) as uint8 (value / 255), float16 or float32, and
``numinst`` (3, Z, Y, X) probabilities (uint8 = value / 255, or float) or ``fg`` (1, Z, Y, X). The output
``instances`` is (K, Z, Y, X) uint32 with K = ``model.max_num_inst`` when ``vote.overlap_channels`` (channel
1 holds the second label of overlap voxels), else K = 1, with OME-Zarr label metadata. The distributed
pipeline calls the same ``ppp_dist.ops`` functions per block.
"""

from __future__ import annotations

import logging
import time
from pathlib import Path
from typing import Any

import numpy as np

from ppp_dist.config import PipelineConfig
from ppp_dist.errors import InputDataError

logger = logging.getLogger(__name__)

INSTANCES_KEY = "instances"


def _probabilities(array: Any, name: str) -> np.ndarray:
    data = np.asarray(array[...])
    if data.dtype == np.uint8:
        return data.astype(np.float32) / np.float32(255)
    if data.dtype.kind != "f":
        raise InputDataError(f"{name} has dtype {data.dtype}; expected uint8 (value/255) or float probabilities")
    data = data.astype(np.float32, copy=False)
    if np.isnan(data).any():
        raise InputDataError(f"{name} contains NaN values; the prediction is broken, predict it again")
    return data


def read_prediction(group_path: str | Path, patch_shape: tuple[int, int, int]) -> tuple[np.ndarray, np.ndarray]:
    """Patches (P, Z, Y, X) in their stored dtype and numinst/fg probabilities (C, Z, Y, X) float32."""
    from ppp_dist.io import volumes

    group_path = str(group_path).rstrip("/")
    patches = volumes.open_array(f"{group_path}/patches")
    expected = int(np.prod(patch_shape))
    if patches.ndim != 4 or patches.shape[0] != expected:
        raise InputDataError(f"{group_path}/patches has shape {patches.shape}; expected ({expected}, Z, Y, X) "
                             f"for model.patch_shape {tuple(patch_shape)}")
    try:
        numinst = volumes.open_array(f"{group_path}/numinst")
    except InputDataError:
        try:
            numinst = volumes.open_array(f"{group_path}/fg")
        except InputDataError as err:
            raise InputDataError(f"{group_path} has neither numinst (3, Z, Y, X) nor fg (1, Z, Y, X); "
                                 "it is not a ppp_dist prediction") from err
    if numinst.ndim != 4 or numinst.shape[0] not in (1, 3) or tuple(numinst.shape[1:]) != tuple(patches.shape[1:]):
        raise InputDataError(f"{group_path}: numinst/fg has shape {numinst.shape} but patches cover "
                             f"{tuple(patches.shape[1:])}; expected (3 or 1, Z, Y, X) over the same voxels")
    data = np.asarray(patches[...])
    if data.dtype.kind == "f" and np.isnan(data).any():
        raise InputDataError(f"{group_path}/patches contains NaN values; the prediction is broken, "
                             "predict it again")
    return data, _probabilities(numinst, f"{group_path}/{numinst.basename}")


def label_volume(config: PipelineConfig, prediction: str | Path, output: str | Path) -> dict[str, Any]:
    """Assemble instances from a whole prediction group; write ``<output>/instances``; return counts."""
    from ppp_dist.io import volumes
    from ppp_dist.ops.assemble import assemble_with_intermediates

    vote, model = config.vote, config.model
    started = time.perf_counter()
    patches, numinst = read_prediction(prediction, model.patch_shape)
    result = assemble_with_intermediates(
        patches, numinst, model.patch_shape, patch_threshold=vote.patch_threshold,
        cover_threshold=vote.cover_threshold, numinst_thresholds=vote.numinst_thresholds,
        consensus=vote.consensus, different_rule=vote.different_rule, selection=vote.selection,
        partition_method=vote.partition, edge_threshold=vote.edge_threshold, max_num_inst=model.max_num_inst,
        min_instance_size=config.postprocess.min_instance_size)
    labels = result.labels if vote.overlap_channels else result.labels[:1]
    spatial = labels.shape[1:]
    chunks = (labels.shape[0],) + tuple(min(s, 64) for s in spatial)
    out = volumes.prepare_array(f"{str(output).rstrip('/')}/{INSTANCES_KEY}", shape=labels.shape, chunks=chunks,
                                dtype="uint32", overwrite=True, axes="czyx", kind="labels")
    out[...] = labels
    n_instances = int(labels.max()) if labels.size else 0
    summary = {"instances": n_instances, "selected_patches": int(len(result.selected)),
               "foreground_voxels": int(np.count_nonzero(result.numinst)),
               "overlap_voxels": int(np.count_nonzero(result.numinst >= 2)),
               "seconds": time.perf_counter() - started,
               "step_seconds": {k: round(v, 4) for k, v in result.timings.items()}}
    logger.info("label: %d instances from %d selected patches in %.2f s", n_instances,
                summary["selected_patches"], summary["seconds"])
    return summary


def postprocess_volume(config: PipelineConfig, instances: str, output: str | Path) -> dict[str, Any]:
    """Remove small instances, relabel, optionally dilate; write ``<output>/instances``."""
    from ppp_dist.io import volumes
    from ppp_dist.ops.postprocess import dilate, remove_small_and_relabel

    source = volumes.open_array(instances)
    labels = np.asarray(source[...])
    if labels.ndim != 4:
        raise InputDataError(f"{instances} has shape {labels.shape}; expected instance channels (K, Z, Y, X)")
    before = int(labels.max()) if labels.size else 0
    labels = remove_small_and_relabel(labels, config.postprocess.min_instance_size)
    if config.postprocess.dilate:
        labels = dilate(labels, config.postprocess.dilate)
    out = volumes.prepare_array(f"{str(output).rstrip('/')}/{INSTANCES_KEY}", shape=labels.shape,
                                chunks=source.chunks, dtype="uint32", overwrite=True, axes="czyx", kind="labels")
    out[...] = labels
    return {"instances_before": before, "instances": int(labels.max()) if labels.size else 0}
