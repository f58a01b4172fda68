"""Orchestration of the distributed pipeline: predict -> vote -> agglomerate -> paint (-> relabel).

Each blockwise stage is one ``runner.StageRunner.run`` call (ledger, retries, resume); the agglomeration is a
tree of tasks on the workers that the driver submits (``ppp_dist.pipeline.agglomerate.agglomerate_instances``).
Resume: a stage skips the blocks its ledger marks done,
unless an upstream stage did work in this run (then its old results are stale and it is redone), or the
stage's parameters (block shape, assembly settings, input paths; ``<work_dir>/params.json``) changed.

Layout inside ``exp_dir``: ``prediction.zarr`` (predict outputs, when ``raw`` is given),
``instances.zarr/instances`` (the labels, OME-Zarr labels), ``pipeline/`` (work files: what vote leaves for
paint -- ``vote.zarr`` and ``vote_rows/`` --, paint sizes, removed ids, stage parameters), the graph DB per
``[database]``. The work folder and the zarr outputs must be on a
file system every worker sees.
"""

from __future__ import annotations

import logging
import math
import time
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ppp_dist.errors import ConfigError, InputDataError, StorageError
from ppp_dist.experiment import INSTANCES, INSTANCES_KEY, PREDICTION, ExperimentPaths

if TYPE_CHECKING:
    from ppp_dist.config.sections import PipelineConfig
    from ppp_dist.io.stores import StoreFactory
    from ppp_dist.ops.settings import AssemblySettings
    from ppp_dist.pipeline.runner import StageRunner

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class PipelineResult:
    """What :func:`run_pipeline` did.

    ``stages``: per stage (predict, vote, agglomerate, paint, relabel; those that ran) a summary with
    ``blocks``, ``done``, ``skipped``, ``failed``, ``seconds``, ``voxels``, ``voxels_per_s``, ``ok``,
    ``errors``, ``format`` (one line for people) and ``counts`` (summed over the blocks done in this run).
    """

    ok: bool  # False: blocks failed (the stage summaries say which); the same call retries them
    stages: dict[str, dict[str, Any]]
    prediction: str | None = None  # the stored prediction group (None when fused or from labels)
    output: str | None = None  # the labels array, "out.zarr/instances"
    instances: int | None = None
    removed_instances: int | None = None


def _summary(s: Any, voxels: int) -> dict[str, Any]:
    ran = s.counts.get("voxels", 0)
    counts = dict(s.counts)  # summed over the blocks done in this run
    counts["rows"] = sum(int(counts.get(t, 0)) for t in ("clusters", "patch_map", "links", "edges", "fragments"))
    return {"blocks": s.total, "done": s.done, "skipped": s.skipped, "failed": s.failed, "seconds": round(s.seconds, 3),
            "voxels": voxels, "voxels_per_s": (ran / s.seconds) if s.seconds > 0 and ran else 0.0,
            "ok": s.ok, "errors": list(s.errors), "format": s.format(), "counts": counts}


def run_pipeline(config: PipelineConfig, exp_dir: str | Path, *, client: Any, raw: str | None = None,
                 prediction: str | None = None, labels: str | None = None, output: str | None = None,
                 checkpoint: str | Path | None = None, block_shape: tuple[int, int, int] | None = None,
                 resume: bool = True, progress: bool = False, threads: int | None = None,
                 fused: bool | None = None, fail_fast: bool = False) -> PipelineResult:
    """Run the blockwise pipeline on ``client`` (``None``: in-process).

    Parameters
    ----------
    config : PipelineConfig
    exp_dir : the experiment folder (graph DB, work files, default outputs).
    raw : "raw.zarr/key" to predict first (needs a checkpoint: ``checkpoint`` or [prediction] checkpoint).
    prediction : "pred.zarr" group with ``patches`` and ``numinst``/``fg`` (instead of ``raw``).
    labels : "gt.zarr/key" instance labels: oracle patches computed per block, none stored (instead of ``raw``;
        what a perfect network predicts, for benchmarks and checks on large volumes).
    fused : with ``raw``: predict (-> decode) inside the vote and paint blocks and store no patches
        (``pipeline.sources.NetworkPrediction``); default ``not [prediction] store_patches``.
    output : "out.zarr/instances" array for the labels; default ``<exp_dir>/instances.zarr/instances``.
    block_shape : vote/paint block (default [vote] block_shape); must be whole chunks of the output.
    threads : numba/torch threads per worker task (default [cluster] threads_per_worker).
    fail_fast : in this process only (``client=None``): a failing block raises its error (no retries).
    """
    from ppp_dist.io.stores import StoreFactory
    from ppp_dist.pipeline.paint import PaintStage
    from ppp_dist.pipeline.relabel import RelabelStage
    from ppp_dist.pipeline.runner import StageRunner
    from ppp_dist.pipeline.settings import blockwise_settings
    from ppp_dist.pipeline.sources import NetworkPrediction
    from ppp_dist.pipeline.vote import VoteArtifacts, VoteStage

    if sum(x is not None for x in (raw, prediction, labels)) != 1:
        raise ConfigError("give exactly one of raw (predict first), prediction (an existing prediction group) or "
                          "labels (oracle patches computed per block)")
    paths = ExperimentPaths(Path(exp_dir))
    paths.work.mkdir(parents=True, exist_ok=True)
    settings = blockwise_settings(config)
    if threads is None and client is not None:  # in-process runs leave this process's thread settings alone
        threads = config.cluster.threads_per_worker
    factory = StoreFactory(config.database, str(paths.path))
    runner = StageRunner(client, factory, paths.work, resume=resume, retries=config.cluster.retries,
                         progress=progress, log_dir=paths.logs, fail_fast=fail_fast)
    bz, by, bx = (int(b) for b in (block_shape or config.vote.block_shape))
    block = (bz, by, bx)
    stages: dict[str, dict[str, Any]] = {}

    # -- predict (stored), or a source that computes the patches per block
    config, source, predict = _source(config, paths, raw, prediction, labels, checkpoint, block_shape, threads,
                                      fused if fused is not None else not config.prediction.store_patches)
    if predict is not None:
        s = runner.run(predict)
        stages[predict.name] = _summary(s, math.prod(predict.volume_shape or ()))
        if not s.ok:
            return PipelineResult(False, stages, prediction=predict.outputs_group)
        prediction = predict.outputs_group
    vz, vy, vx = (int(v) for v in source.volume_shape(settings))
    volume = (vz, vy, vx)
    nvox = math.prod(volume)
    cuda = config.cluster.kind == "cuda" and isinstance(source, NetworkPrediction)  # the network runs in vote
    vote = VoteStage(source, settings, VoteArtifacts(str(paths.work)), threads, block, cuda, volume)
    s = runner.run(vote)
    stages[vote.name] = _summary(s, nvox)
    if not s.ok:
        return PipelineResult(False, stages, prediction=prediction)

    # -- agglomerate (the driver submits a tree of tasks)
    stages["agglomerate"] = _agglomerate(runner, factory, settings, config, nvox)
    n_instances = int(stages["agglomerate"]["instances"])

    # -- paint (-> relabel)
    output = output or str(paths.output(INSTANCES) / INSTANCES_KEY)
    chunks, force = _prepare_labels(config, output, volume, block, settings, source.describe(), resume)
    paint = PaintStage(output, factory, volume, block, settings, str(paths.work), threads, source.describe(),
                       chunks, n_instances)
    s = runner.run(paint, force=force)  # a (re)created output array has lost whatever the ledger says was painted
    stages[paint.name] = _summary(s, nvox)
    if not s.ok:
        return PipelineResult(False, stages, prediction=prediction, output=output)
    removed = paint.finalize()
    if len(removed):
        relabel = RelabelStage(**vars(paint), removed=len(removed))
        s = runner.run(relabel)
        stages[relabel.name] = _summary(s, nvox)
        if not s.ok:
            return PipelineResult(False, stages, prediction=prediction, output=output)
    final = n_instances - len(removed)
    logger.info("pipeline: %d instances in %s", final, output)
    return PipelineResult(True, stages, prediction=prediction, output=output, instances=final,
                          removed_instances=int(len(removed)))


def _source(config: PipelineConfig, paths: ExperimentPaths, raw: str | None, prediction: str | None,
            labels: str | None, checkpoint: str | Path | None, block_shape: tuple[int, int, int] | None,
            threads: int | None, fused: bool) -> tuple[PipelineConfig, Any, Any]:
    """(config with the checkpoint's normalisation, the vote's patch source, the predict stage or None)."""
    from ppp_dist.learning.normalize import for_prediction
    from ppp_dist.pipeline.settings import prediction_arrays
    from ppp_dist.pipeline.sources import NetworkPrediction, OraclePatches, StoredPrediction

    if labels is not None:
        return config, OraclePatches(str(labels)), None
    if prediction is not None:
        return config, StoredPrediction(*prediction_arrays(str(prediction))), None
    assert raw is not None
    ckpt = str(checkpoint or paths.checkpoint(config.prediction.checkpoint))
    if fused:
        from ppp_dist.learning.predict import open_raw

        open_raw(raw, config.data)  # one sentence now if the volume does not fit the config
        config = for_prediction(config, str(raw), ckpt)  # the checkpoint's normalisation, one set of numbers
        return config, NetworkPrediction(config, str(raw), ckpt, threads), None
    from ppp_dist.pipeline.predict import PredictStage

    config = for_prediction(config, str(raw), ckpt)  # the checkpoint's normalisation, one set of numbers
    predict = PredictStage.create(config, raw, str(paths.output(PREDICTION)), ckpt, torch_threads=threads,
                                  block_shape=block_shape)
    if config.model.head == "codes":
        raise ConfigError("head = 'codes' (ppp+dec) runs blockwise only fused (predict -> decode -> vote, "
                          "[prediction] store_patches = false), or with `ppp-dist decode` before label")
    return config, StoredPrediction(*prediction_arrays(predict.outputs_group)), predict


def _agglomerate(runner: StageRunner, factory: StoreFactory, settings: AssemblySettings, config: PipelineConfig,
                 nvox: int) -> dict[str, Any]:
    """Agglomerate unless its result is still valid (same parameters, no new vote rows, resume)."""
    from ppp_dist.pipeline.agglomerate import INSTANCES_STAGE, agglomerate_instances

    store = factory()
    try:
        agg_params = {"partition": settings.partition, "edge_threshold": settings.edge_threshold}
        if runner.fresh("agglomerate", agg_params) or not store.done_blocks(INSTANCES_STAGE):
            t0 = time.perf_counter()
            agg = agglomerate_instances(store, settings, store_factory=factory, client=runner.client,
                                        agglomeration=config.vote.agglomeration,
                                        mws_max_memory_gib=config.vote.mws_max_memory_gib)
            runner.upstream_work = True
            seconds = round(time.perf_counter() - t0, 3)
            return {"blocks": 1, "done": 1, "skipped": 0, "failed": 0, "seconds": seconds, "voxels": nvox,
                    "ok": True, "method": agg["method"], "instances": agg["instances"], "clusters": agg["clusters"],
                    "counts": agg, "format": f"agglomerate: {agg['clusters']:,} clusters -> {agg['instances']:,} "
                                             f"instances ({agg['method']}) | {seconds:.1f} s"}
        row = list(store.ledger_rows(INSTANCES_STAGE))[0]
        return {"blocks": 1, "done": 1, "skipped": 1, "failed": 0, "seconds": 0.0, "voxels": nvox, "ok": True,
                "instances": int(row.counts["instances"]), "format": "agglomerate: skipped, already done"}
    finally:
        store.close()


def _prepare_labels(config: PipelineConfig, output: str, volume: tuple[int, ...], block: tuple[int, ...],
                    settings: AssemblySettings, source: str, resume: bool) -> tuple[tuple[int, ...], bool]:
    """Create (or reuse) the labels array; return its chunks and whether every paint block must be redone.

    An earlier output of the paint stage with another layout is replaced (every paint block is redone then);
    anything else at that path is only replaced with [general] overwrite (``prepare_array`` explains)."""
    from ppp_dist.geometry import check_chunk_alignment
    from ppp_dist.io.volumes import choose_chunks, open_array, prepare_array

    k = settings.max_num_inst if settings.overlap_channels else 1
    chunks = choose_chunks(volume, block, channels=k, itemsize=4)
    reuse, ours = False, False
    try:
        old = open_array(output)
        stamp: Any = old.attrs.get("ppp_dist") or {}
        ours = stamp.get("stage") == "paint"
        check_chunk_alignment(block, old.chunks[1:], volume, output)
        reuse = resume and not config.general.overwrite and old.shape == (k,) + tuple(volume) and old.dtype == "uint32"
    except (InputDataError, StorageError):  # missing, or chunks that do not fit the blocks
        reuse = False
    if reuse:
        chunks = tuple(old.chunks[1:])
    prepare_array(output, shape=(k,) + tuple(volume), chunks=(k,) + tuple(chunks), dtype="uint32", axes="czyx",
                  kind="labels", overwrite=not reuse and (ours or config.general.overwrite),
                  attrs={"ppp_dist": {"stage": "paint", "source": source}})
    out = open_array(output)
    check_chunk_alignment(block, out.chunks[1:], volume, output)
    return tuple(out.chunks), not reuse


__all__ = ["PipelineResult", "run_pipeline"]
