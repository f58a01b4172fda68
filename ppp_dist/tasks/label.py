"""Task label: assemble instances from the consensus of the predicted patches.

With ``[vote] blockwise`` (the default) label runs the distributed pipeline (vote -> agglomerate -> paint,
``ppp_dist.pipeline.infer``) on the dask cluster of ``[cluster]``; when predict runs in the same command the
network runs on the workers too (``run_from_raw``), fused when ``[prediction] store_patches = false``.
Otherwise ``label_volume`` runs the same pipeline in this process with one block over the whole volume
(``ops.assemble`` only for the greedy cover, which is sequential over the whole volume):

The prediction group holds ``patches`` (P, Z, Y, X) as uint8 (value / 255), float16 or float32, and
``numinst`` (3, Z, Y, X) probabilities (uint8 = value / 255, or float) or ``fg`` (1, Z, Y, X). The output
``instances`` is (K, Z, Y, X) uint32 with K = ``model.max_num_inst`` when ``vote.overlap_channels`` (channel
1 holds the second label of overlap voxels), else K = 1, with OME-Zarr label metadata.
"""

from __future__ import annotations

import logging
import shutil
import sys
import time
from dataclasses import asdict, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from ppp_dist.config import PipelineConfig
from ppp_dist.errors import StorageError, disk_full
from ppp_dist.experiment import INSTANCES, INSTANCES_KEY, PREDICTION
from ppp_dist.tasks.base import TaskContext, TaskResult

if TYPE_CHECKING:
    from ppp_dist.ops.settings import AssemblySettings
    from ppp_dist.tasks.preflight import Preflight

logger = logging.getLogger(__name__)

NAME = "label"
SUMMARY = "assemble instances from the consensus of the predicted patches"
UPSTREAM: tuple[str, ...] = ("predict", "decode")
INPUT = "a prediction group (patches + numinst)"


def preflight(check: Preflight) -> None:
    config = check.config
    group = check.input_of(NAME, PREDICTION)
    if group is not None:
        check.prediction_group(group, NAME)
    check.output(INSTANCES, "the instances")
    if config.vote.blockwise:
        from ppp_dist.pipeline.settings import blockwise_settings

        blockwise_settings(config)  # settings that only the blockwise label refuses
        check.database()
        if config.cluster.kind == "scheduler":
            from ppp_dist.pipeline.scheduler_check import check_scheduler

            check_scheduler(config.cluster.scheduler_address)


def run(ctx: TaskContext) -> TaskResult:
    prediction = ctx.upstream(NAME, UPSTREAM, ctx.experiment.output(PREDICTION), INPUT)
    if ctx.config.vote.blockwise:
        return _run_blockwise(ctx, prediction)
    output = ctx.experiment.output(INSTANCES)
    summary = label_volume(ctx.vote_config(), prediction, output)
    print(f"label: {summary['instances']} instances from {summary['selected_patches']} patches "
          f"({summary['foreground_voxels']} foreground voxels) in {summary['seconds']:.2f} s -> {output}/instances")
    _warn_if_empty(ctx, summary["instances"], prediction)
    return TaskResult(outputs={"instances": f"{output}/{INSTANCES_KEY}"}, summary=summary)


def run_from_raw(ctx: TaskContext) -> TaskResult:
    """predict (-> decode) -> vote -> agglomerate -> paint on the dask cluster: the network runs on the workers
    (GPU workers with [cluster] kind = "cuda"); with [prediction] store_patches = false fused, storing no patches."""
    return _run_blockwise(ctx, None, raw=ctx.explicit_input or ctx.config.data.input)


def _run_blockwise(ctx: TaskContext, prediction: str | None, raw: str | None = None) -> TaskResult:
    """vote -> agglomerate -> paint on the dask cluster of [cluster]; the output equals the in-process label.
    With ``raw``: predict first, blockwise (or fused), instead of reading ``prediction``."""
    from ppp_dist.io.database import open_database
    from ppp_dist.pipeline.cluster import close_cluster, dashboard_link, start_cluster
    from ppp_dist.pipeline.infer import run_pipeline

    with open_database(ctx.config.database, ctx.experiment.path) as db:  # one database, one experiment
        db.claim(ctx.experiment.id, str(ctx.experiment.path.resolve()))
    if ctx.lock is not None:
        ctx.lock.hold_database(ctx.config.database)  # the run holds the database too (a copied folder, ...)
    client = start_cluster(ctx.config.cluster, log_directory=ctx.experiment.jobs_logs)
    print(f"dask dashboard: {dashboard_link(client, ctx.config.cluster)}", flush=True)
    try:
        if raw is not None:
            result = run_pipeline(ctx.vote_config(), ctx.experiment.path, client=client, raw=raw,
                                  checkpoint=ctx.checkpoint(), progress=True)
        else:
            result = run_pipeline(ctx.vote_config(), ctx.experiment.path, client=client, prediction=prediction,
                                  progress=True)
    finally:
        close_cluster(client)
    for stage in result.stages.values():
        print(stage["format"])
    if not result.ok:
        return TaskResult(ok=False, summary=asdict(result))
    if raw is not None:
        where = result.prediction or "not stored: fused predict -> vote"
        print(f"predict: {raw} -> {where} (blockwise on the workers)")
    print(f"label: {result.instances} instances (blockwise) -> {result.output}")
    _warn_if_empty(ctx, int(result.instances or 0), prediction or raw)
    return TaskResult(outputs={"instances": str(result.output)}, summary=asdict(result))


def _warn_if_empty(ctx: TaskContext, instances: int, prediction: str | None) -> None:
    """An all-background prediction is no error (label writes an all-zero volume) but deserves one line."""
    if instances == 0:
        print(f"ppp-dist: warning: label found no instances in {prediction}: it is all background at [vote] "
              f"numinst_thresholds = {list(ctx.config.vote.numinst_thresholds)}, so the instances are all 0",
              file=sys.stderr)


def label_volume(config: PipelineConfig, prediction: str | Path, output: str | Path) -> dict[str, Any]:
    """Assemble instances from a whole prediction group in this process; write ``<output>/instances``.

    The blockwise pipeline (vote -> agglomerate -> paint) with one block over the whole volume and
    ``client=None``, on a private SQLite database and work folder (``.<output name>.work`` beside the output,
    removed afterwards): the same code path as ``[vote] blockwise``, so the two cannot drift apart. Only
    ``[vote] selection = "greedy"``, which is sequential over the whole volume, runs ``ops.assemble``
    instead. A block's error (NaN values, ...) is raised here, not retried.

    Returns
    -------
    dict: ``instances``, ``selected_patches``, ``foreground_voxels``, ``seconds``, ``step_seconds``.
    """
    from ppp_dist.io import volumes
    from ppp_dist.pipeline.settings import assembly_settings, check_prediction, prediction_arrays

    started = time.perf_counter()
    settings = assembly_settings(config)
    group = str(prediction).rstrip("/")
    patches, numinst = (volumes.open_array(path) for path in prediction_arrays(group))
    volume = check_prediction(patches, numinst, settings.patch_shape, group)
    if settings.selection == "greedy":
        return _assemble_whole_volume(settings, patches, numinst, output, started)
    return _label_one_block(config, group, volume, output, started)


def _label_one_block(config: PipelineConfig, group: str, volume: tuple[int, int, int], output: str | Path,
                     started: float) -> dict[str, Any]:
    from ppp_dist.config import DatabaseConfig
    from ppp_dist.pipeline.infer import run_pipeline

    out = Path(output)
    work = out.parent / f".{out.name}.work"
    # the in-process label always replaced its output; dilation is the postprocess task's (not the label's)
    local = replace(config, database=DatabaseConfig(), general=replace(config.general, overwrite=True),
                    postprocess=replace(config.postprocess, dilate=0))
    shutil.rmtree(work, ignore_errors=True)
    try:
        result = run_pipeline(local, work, client=None, prediction=group, output=f"{out}/{INSTANCES_KEY}",
                              block_shape=volume, resume=False, fail_fast=True)
    except Exception as err:
        if disk_full(err) is None:
            raise
        # the work folder is part of writing the output here: name the output, not the private database
        raise StorageError(f"no space left on the device for output {out}; free some space, then run the same "
                           "command again") from err
    finally:
        shutil.rmtree(work, ignore_errors=True)
    vote = result.stages["vote"]["counts"]
    summary = {"instances": int(result.instances or 0), "selected_patches": int(vote.get("patches", 0)),
               "foreground_voxels": int(vote.get("foreground", 0)), "seconds": time.perf_counter() - started,
               "step_seconds": {name: stage["seconds"] for name, stage in result.stages.items()}}
    logger.info("label: %d instances from %d selected patches in %.2f s (one block)", summary["instances"],
                summary["selected_patches"], summary["seconds"])
    return summary


def _assemble_whole_volume(settings: AssemblySettings, patches: Any, numinst: Any, output: str | Path,
                           started: float) -> dict[str, Any]:
    """``ops.assemble`` on the whole prediction: the greedy cover, which no block can compute."""
    from ppp_dist.io import volumes
    from ppp_dist.ops.assemble import assemble_with_intermediates

    result = assemble_with_intermediates(np.asarray(patches[...]), np.asarray(numinst[...]), settings)
    labels = result.labels if settings.overlap_channels else result.labels[:1]
    spatial = labels.shape[1:]
    chunks = (labels.shape[0],) + tuple(min(s, 64) for s in spatial)
    out = volumes.prepare_array(f"{str(output).rstrip('/')}/{INSTANCES_KEY}", shape=labels.shape, chunks=chunks,
                                dtype="uint32", overwrite=True, axes="czyx", kind="labels")
    out[...] = labels
    n_instances = int(labels.max()) if labels.size else 0
    summary = {"instances": n_instances, "selected_patches": int(len(result.selected)),
               "foreground_voxels": int(np.count_nonzero(result.numinst)), "seconds": time.perf_counter() - started,
               "step_seconds": {k: round(v, 4) for k, v in result.timings.items()}}
    logger.info("label: %d instances from %d selected patches in %.2f s (whole volume, greedy cover)", n_instances,
                summary["selected_patches"], summary["seconds"])
    return summary
