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


def read_prediction(group_path: str | Path, patch_shape: tuple[int, int, int]) -> tuple[np.ndarray, np.ndarray]:
    """Patches (P, Z, Y, X) and numinst/fg (C, Z, Y, X), both as stored; the assembly converts and
    validates values (uint8 = value / 255, NaN refused) exactly as the blockwise pipeline does."""
    from ppp_dist.io import volumes
    from ppp_dist.pipeline.settings import check_prediction, prediction_arrays

    patches_path, numinst_path = prediction_arrays(str(group_path))
    patches, numinst = volumes.open_array(patches_path), volumes.open_array(numinst_path)
    check_prediction(patches, numinst, patch_shape, str(group_path).rstrip("/"))
    return np.asarray(patches[...]), np.asarray(numinst[...])


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
        min_instance_size=config.postprocess.min_instance_size, overlap_votes=vote.overlap_votes,
        refine_consensus=vote.refine_consensus, thin_out=vote.thin_out,
        foreground_threshold=vote.foreground_threshold)
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
