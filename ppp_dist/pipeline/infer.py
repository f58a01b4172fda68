"""Orchestration of the distributed pipeline: predict -> vote -> agglomerate -> paint (-> relabel).

Each blockwise stage is one ``runner.run_stage`` call (ledger, retries, resume); the agglomeration is a
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

import json
import logging
import math
import time
from dataclasses import asdict
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ppp_dist import __version__
from ppp_dist.errors import ConfigError, InputDataError, StorageError
from ppp_dist.experiment import INSTANCES, INSTANCES_KEY, PREDICTION, ExperimentPaths

if TYPE_CHECKING:
    from ppp_dist.config.sections import PipelineConfig

logger = logging.getLogger(__name__)



def _summary(s: Any, voxels: int) -> dict[str, Any]:
    ran = s.counts.get("voxels", 0)
    counts = dict(s.counts)  # summed over the blocks done in this run
    counts["rows"] = sum(int(counts.get(t, 0)) for t in ("clusters", "patch_map", "links", "edges", "fragments"))
    return {"blocks": s.total, "done": s.done, "skipped": s.skipped, "failed": s.failed, "seconds": round(s.seconds, 3),
            "voxels": voxels, "voxels_per_s": (ran / s.seconds) if s.seconds > 0 and ran else 0.0,
            "ok": s.ok, "errors": list(s.errors), "format": s.format(), "counts": counts}


def _params_changed(work: Path, stage: str, params: dict[str, Any]) -> bool:
    path = work / f"params_{stage}.json"
    text = json.dumps({**params, "ppp_dist_version": __version__}, sort_keys=True, default=str)
    old = path.read_text() if path.exists() else None
    work.mkdir(parents=True, exist_ok=True)
    path.write_text(text)
    return old is not None and old != text


def run_pipeline(config: PipelineConfig, exp_dir: str | Path, *, client: Any, raw: str | None = None,
                 prediction: str | None = None, labels: str | None = None, output: str | None = None,
                 checkpoint: str | Path | None = None, block_shape: tuple[int, int, int] | None = None,
                 resume: bool = True, progress: bool = False, threads: int | None = None,
                 fused: bool | None = None) -> dict[str, Any]:
    """Run the blockwise pipeline on ``client`` (``None``: in-process) and return per-stage summaries.

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

    Returns
    -------
    dict: ``stages`` (name -> blocks, done, skipped, failed, seconds, voxels, voxels_per_s, ok), ``instances``,
    ``output``, ``prediction``, ``ok``.
    """
    from ppp_dist.geometry import check_chunk_alignment
    from ppp_dist.io.stores import StoreFactory
    from ppp_dist.io.volumes import choose_chunks, open_array, prepare_array
    from ppp_dist.learning.normalize import for_prediction
    from ppp_dist.pipeline import paint as paint_mod
    from ppp_dist.pipeline import vote as vote_mod
    from ppp_dist.pipeline.agglomerate import INSTANCES_STAGE, agglomerate_instances
    from ppp_dist.pipeline.runner import run_stage
    from ppp_dist.pipeline.settings import AssemblySettings, prediction_arrays
    from ppp_dist.pipeline.sources import NetworkPrediction, OraclePatches, StoredPrediction

    if sum(x is not None for x in (raw, prediction, labels)) != 1:
        raise ConfigError("give exactly one of raw (predict first), prediction (an existing prediction group) or "
                          "labels (oracle patches computed per block)")
    if fused is None:
        fused = not config.prediction.store_patches
    exp_dir = Path(exp_dir)
    paths = ExperimentPaths(exp_dir)
    work = paths.work
    work.mkdir(parents=True, exist_ok=True)
    settings = AssemblySettings.from_config(config)
    if threads is None and client is not None:  # in-process runs leave this process's thread settings alone
        threads = config.cluster.threads_per_worker
    factory = StoreFactory(config.database, str(exp_dir))
    log_dir = paths.logs
    block = tuple(int(b) for b in (block_shape or config.vote.block_shape))
    retries = config.cluster.retries
    stages: dict[str, Any] = {}
    upstream_work = False

    def stage(name: str, blocks: list, fn: Any, params: dict[str, Any], voxels: int, force: bool = False,
              before: Any = None, **kw: Any) -> Any:
        nonlocal upstream_work
        changed = _params_changed(work, name, params)
        fresh = changed or upstream_work or force or not resume
        if changed and resume:
            logger.info("%s: parameters or package version changed since the last run, redoing every block", name)
        elif fresh and resume:
            logger.debug("%s: an upstream stage wrote new data, running every block", name)
        if fresh:
            _forget(name)
        if before is not None:
            before(fresh)
        s = run_stage(client, name, blocks, fn, factory, retries=retries, resume=not fresh, progress=progress,
                      log_dir=log_dir, **kw)
        stages[name] = _summary(s, voxels)
        upstream_work = upstream_work or (s.done - s.skipped) > 0
        return s

    def _forget(name: str) -> None:
        """Drop the stage's ledger rows (all blocks, also of another grid); vote also drops the graph."""
        store = factory()
        try:
            store.reset_blocks(name)
            if name == vote_mod.STAGE:
                store.clear_graph()
                for later in ("agglomerate", INSTANCES_STAGE):
                    store.reset_blocks(later)
        finally:
            store.close()

    def result(ok: bool, **extra: Any) -> dict[str, Any]:
        return {"stages": stages, "ok": ok, "prediction": prediction, **extra}

    # -- predict (stored), or a source that computes the patches per block
    source: Any = None
    if labels is not None:
        source = OraclePatches(str(labels))
    elif raw is not None and fused:
        from ppp_dist.learning.predict import open_raw

        open_raw(raw, config.data)  # one sentence now if the volume does not fit the config
        ckpt = str(checkpoint or paths.checkpoint(config.prediction.checkpoint))
        config = for_prediction(config, str(raw), ckpt)  # the checkpoint's normalisation, one set of numbers
        source = NetworkPrediction(config, str(raw), ckpt, threads)
    elif raw is not None:
        from ppp_dist.pipeline import predict_blocks as pb

        ckpt = str(checkpoint or paths.checkpoint(config.prediction.checkpoint))
        config = for_prediction(config, str(raw), ckpt)  # the checkpoint's normalisation, one set of numbers
        prediction = str(paths.output(PREDICTION))
        outputs = pb.prepare_outputs(config, raw, prediction, ckpt)
        grid = pb.predict_grid(config, raw, block_shape)
        for path in outputs.values():
            arr = open_array(path)
            check_chunk_alignment(grid.block_shape, arr.chunks[1:], arr.shape[1:], path)
        fn = pb.PredictStage(config, raw, tuple(sorted(outputs.items())), ckpt, torch_threads=threads)
        res = {"GPU": 1} if config.cluster.kind == "cuda" else None
        s = stage(pb.STAGE, list(grid), fn, {"raw": raw, "checkpoint": ckpt, "block": grid.block_shape},
                  math.prod(grid.volume_shape), resources=res)
        if not s.ok:
            return result(False)
        if "patches" not in outputs:
            raise ConfigError("head = 'codes' (ppp+dec) runs blockwise only fused (predict -> decode -> vote, "
                              "[prediction] store_patches = false), or with `ppp-dist decode` before label")

    # -- vote
    if source is None:
        source = StoredPrediction(*prediction_arrays(str(prediction)))
    volume = source.volume_shape(settings)
    nvox = math.prod(volume)
    vgrid = vote_mod.vote_grid(volume, block, settings)
    # what the vote rows depend on (the contraction depends on partition and edge_threshold; the paint options
    # only change later stages)
    later = ("min_instance_size", "accumulate", "overlap_channels")
    params = {"source": source.describe(), "block": block,
              "settings": {k: v for k, v in asdict(settings).items() if k not in later}}
    res = {"GPU": 1} if isinstance(source, NetworkPrediction) and config.cluster.kind == "cuda" else None
    artifacts = vote_mod.VoteArtifacts(str(work))
    s = stage(vote_mod.STAGE, list(vgrid), vote_mod.VoteStage(source, settings, artifacts, threads), params, nvox,
              before=lambda fresh: artifacts.prepare(tuple(volume), vgrid.block_shape, fresh), resources=res)
    if not s.ok:
        return result(False)

    # -- agglomerate (driver)
    store = factory()
    try:
        agg_params = {"partition": settings.partition, "edge_threshold": settings.edge_threshold}
        changed = _params_changed(work, "agglomerate", agg_params)
        if upstream_work or changed or not store.done_blocks(INSTANCES_STAGE) or not resume:
            t0 = time.perf_counter()
            agg = agglomerate_instances(store, settings, store_factory=factory, client=client,
                                        agglomeration=config.vote.agglomeration,
                                        mws_max_memory_gib=config.vote.mws_max_memory_gib)
            stages["agglomerate"] = {"blocks": 1, "done": 1, "skipped": 0, "failed": 0,
                                     "seconds": round(time.perf_counter() - t0, 3), "voxels": nvox, "ok": True,
                                     "method": agg["method"], "instances": agg["instances"],
                                     "clusters": agg["clusters"], "counts": agg}
            stages["agglomerate"]["format"] = (
                f"agglomerate: {agg['clusters']:,} clusters -> {agg['instances']:,} instances "
                f"({agg['method']}) | {stages['agglomerate']['seconds']:.1f} s")
            upstream_work = True
        else:
            row = [r for r in store.ledger_rows(INSTANCES_STAGE)][0]
            stages["agglomerate"] = {"blocks": 1, "done": 1, "skipped": 1, "failed": 0, "seconds": 0.0,
                                     "voxels": nvox, "ok": True, "instances": int(row.counts["instances"]),
                                     "format": "agglomerate: skipped, already done"}
        n_instances = int(stages["agglomerate"]["instances"])
    finally:
        store.close()

    # -- paint
    k = settings.max_num_inst if settings.overlap_channels else 1
    output = output or str(paths.output(INSTANCES) / INSTANCES_KEY)
    pgrid = paint_mod.paint_grid(volume, block, settings)
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
    # an earlier output of this stage with another layout is replaced (every paint block is redone then);
    # anything else at that path is only replaced with [general] overwrite (prepare_array explains)
    prepare_array(output, shape=(k,) + tuple(volume), chunks=(k,) + tuple(chunks), dtype="uint32", axes="czyx",
                  kind="labels", overwrite=not reuse and (ours or config.general.overwrite),
                  attrs={"ppp_dist": {"stage": "paint", "source": source.describe()}})
    out = open_array(output)
    check_chunk_alignment(block, out.chunks[1:], volume, output)
    common: dict[str, Any] = dict(output=output, store_factory=factory, vote_volume=tuple(volume),
                                  vote_block_shape=block, settings=settings, work_dir=str(work), threads=threads)
    params = {**params, "settings": asdict(settings), "output": output, "chunks": tuple(out.chunks)}
    # a (re)created output array has lost whatever the ledger says was painted
    s = stage(paint_mod.STAGE, list(pgrid), paint_mod.PaintStage(**common), params, nvox, force=not reuse)
    if not s.ok:
        return result(False, output=output)
    removed = paint_mod.removed_instances(work, [b.block_id for b in pgrid], n_instances, settings.min_instance_size)
    if len(removed):
        import numpy as np

        np.save(work / "removed_ids.npy", removed)
        s = stage(paint_mod.RELABEL_STAGE, list(pgrid), paint_mod.PaintStage(**common, relabel=True),
                  {**params, "removed": len(removed)}, nvox)
        if not s.ok:
            return result(False, output=output)
    final = n_instances - len(removed)
    logger.info("pipeline: %d instances in %s", final, output)
    return result(True, output=output, instances=final, removed_instances=int(len(removed)))


__all__ = ["run_pipeline"]
