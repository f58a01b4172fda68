"""The main job on the bundled FlyLight sample: the README's first command.

It writes the sample (3 x 50^3 voxels, three overlapping neurons) into the experiment folder as OME-Zarr,
starts a local dask cluster (dashboard link printed), checks the volume blockwise on the workers, plans
every stage and runs the distributed pipeline from the raw volume: predict with the small network shipped in
``ppp_dist/data/sample/model/`` (trained on this crop by ``scripts/train_sample_model.py``; ``MODEL.md``
there has its numbers), vote -> agglomerate -> paint with the SQLite graph database. It then scores the
instances with the FlyLight metrics, repeats the assembly on oracle patches made from the ground truth (what a
perfect network would predict: a check of the assembly alone) and prints where the prediction, the instances
and the report are. The network is trained and scored on the same crop, so its scores show the pipeline
working end to end, not how well the network generalises.
"""

from __future__ import annotations

import argparse
import importlib.resources
import logging
import os
import time
from pathlib import Path
from typing import Any

from ppp_dist.config import load_config
from ppp_dist.errors import ConfigError, InputDataError
from ppp_dist.experiment import CONFIG_NAME, EVALUATION, check_experiment_location, open_experiment
from ppp_dist.lock import ExperimentLock, check_free
from ppp_dist.logs import setup_logging
from ppp_dist.tasks.base import CommandContext, TaskResult

logger = logging.getLogger(__name__)

NAME = "demo"
SUMMARY = "the main job on the bundled FlyLight sample, with a local dask cluster"
UPSTREAM: tuple[str, ...] = ()

#: The demo's settings on top of the shipped model's config (``--config`` files and ``--set`` come after).
DEMO_SETTINGS = ("vote.block_shape=[25, 25, 25]", "postprocess.min_instance_size=500")
MODEL_FOLDER = ("sample", "model")


def sample_model() -> tuple[Path, Path]:
    """(checkpoint, resolved training config) of the network shipped in ``ppp_dist/data/sample/model/``."""
    folder = Path(os.fspath(importlib.resources.files("ppp_dist.data").joinpath(*MODEL_FOLDER)))  # type: ignore[call-overload]  # a regular install
    checkpoint, config = folder / "checkpoint.pt", folder / CONFIG_NAME  # saved as an experiment saves it
    if not (checkpoint.is_file() and config.is_file()):
        raise InputDataError(f"the sample model ({checkpoint}, {config}) is missing; the package was installed "
                             f"without its data files, or run scripts/train_sample_model.py")
    return checkpoint, config


def write_sample(store: str | Path) -> tuple[str, str]:
    """Write the FlyLight sample as ``store/raw`` (float32, normalised) and ``store/labels/gt_instances``.

    The layout the shipped model was trained on (``scripts/train_sample_model.py`` calls this too): the raw is
    ``load_flylight().raw`` (clipped at 1500 and divided by it); the model's config normalises it further
    (``[data] normalization = "clip"``, ``clip_max = 0.25``).
    """
    from ppp_dist.data.flylight import load_flylight
    from ppp_dist.io import volumes

    sample = load_flylight()
    raw_path, gt_path = f"{store}/raw", f"{store}/labels/gt_instances"
    chunks = (25, 25, 25)
    raw = volumes.prepare_array(raw_path, shape=sample.raw.shape, chunks=(sample.raw.shape[0],) + chunks,
                                dtype="float32", overwrite=True, kind="image")
    raw[...] = sample.raw
    gt = volumes.prepare_array(gt_path, shape=sample.instances.shape,
                               chunks=(sample.instances.shape[0],) + chunks, dtype="uint16",
                               overwrite=True, kind="labels")
    gt[...] = sample.instances
    logger.info("sample written: %s and %s, %s voxels", raw_path, gt_path, sample.raw.shape[1:])
    return raw_path, gt_path


def start_cluster(n_workers: int):
    """A LocalCluster with one process per worker and one thread each; the dashboard on a free port."""
    from distributed import Client, LocalCluster

    from ppp_dist.pipeline.cluster import workers_ignore_sigint

    with workers_ignore_sigint():  # Ctrl-C: one line from this process, no traceback from each worker
        cluster = LocalCluster(n_workers=n_workers, threads_per_worker=1, processes=True,
                               dashboard_address=":0", silence_logs=logging.WARNING)
    return Client(cluster)


def blockwise_summary(client, raw_path: str, gt_path: str) -> dict[str, object]:
    """Per-channel raw means and instance voxel counts, computed blockwise on the workers."""
    import dask.array as da

    from ppp_dist.io import volumes

    raw = da.from_zarr(volumes.open_array(raw_path))
    gt = da.from_zarr(volumes.open_array(gt_path))
    means, fg_voxels, overlap_voxels = client.compute(
        [raw.mean(axis=(1, 2, 3)), (gt > 0).sum(axis=(1, 2, 3)), ((gt > 0).sum(axis=0) >= 2).sum()], sync=True)
    return {"raw_mean": [round(float(m), 4) for m in means], "instance_voxels": fg_voxels.tolist(),
            "overlap_voxels": int(overlap_voxels), "tasks": len(raw.__dask_graph__()) + len(gt.__dask_graph__())}


def preflight(ctx: CommandContext) -> None:
    """The user's part of a demo command (experiment folder, --config files, --set), before the demo writes."""
    args = ctx.args
    if args.workers < 1:
        raise ConfigError(f"--workers must be at least 1, got {args.workers}")
    check_experiment_location(root=args.root, exp=args.exp)
    if args.exp is not None:
        check_free(args.exp)
    try:
        base = [sample_model()[1]]
    except InputDataError:
        base = []  # run says that the sample model is missing
    load_config([*base, *args.config], [*DEMO_SETTINGS, *args.overrides])


def run(ctx: CommandContext) -> TaskResult:
    return TaskResult(ok=run_demo(ctx.args) == 0)


def run_demo(args: argparse.Namespace) -> int:
    started = time.perf_counter()
    checkpoint, model_config = sample_model()
    overrides = list(DEMO_SETTINGS) + list(args.overrides)
    experiment = open_experiment(root=args.root, exp=args.exp, configs=[model_config, *args.config],
                                 overrides=overrides, name="demo")
    with ExperimentLock(experiment.path, "ppp-dist demo").acquire():  # one run at a time per experiment
        return _run_demo(args, experiment, checkpoint, started)


def _run_demo(args: argparse.Namespace, experiment: Any, checkpoint: Path, started: float) -> int:
    from ppp_dist.io.database import open_database
    from ppp_dist.learning.model import read_checkpoint
    from ppp_dist.pipeline.infer import run_pipeline
    from ppp_dist.tasks.evaluate import summary_line
    from ppp_dist.tasks.evaluation import evaluate_with_config
    from ppp_dist.tasks.plan import format_bytes, plan_volume

    config = experiment.config
    setup_logging("DEBUG" if args.verbose else config.general.log_level, experiment.log_path)
    print(f"experiment folder: {experiment.path}")
    raw_path, gt_path = write_sample(experiment.output("sample.zarr"))
    with open_database(config.database, experiment.path) as db:
        run_id = db.register_run(experiment.config_path.read_text())
        print(f"run database:      {db.where} ({db.backend}, run {run_id})")
    state = read_checkpoint(checkpoint)
    print(f"model:             {checkpoint} ({state['shapes'].get('num_parameters', 0):,} parameters, "
          f"{state['iteration']:,} iterations on this crop; {checkpoint.parent / 'MODEL.md'})")
    workers = max(1, args.workers)
    client = start_cluster(workers)
    try:
        print(f"dask dashboard:    {client.dashboard_link}")
        summary = blockwise_summary(client, raw_path, gt_path)
        print(f"sample:            {raw_path} (3 x 50^3 float32), {gt_path} (3 neurons, one per channel)")
        print(f"blockwise check:   raw channel means {summary['raw_mean']}, instance voxels "
              f"{summary['instance_voxels']}, overlap voxels {summary['overlap_voxels']} "
              f"({summary['tasks']} dask tasks on {workers} workers)")
        print("plan:")
        for stage in plan_volume(config, (50, 50, 50)):
            print(f"  {stage.stage:<8} {stage.blocks:>3} block(s) of {stage.block_shape}, halo {stage.halo}, "
                  f"~{format_bytes(stage.memory_bytes)} per block: {stage.note}")
        pipeline = run_pipeline(config, experiment.path, client=client, raw=raw_path, checkpoint=checkpoint)
        # the assembly alone, on the patches a perfect network would predict (computed per block from the GT)
        oracle_dir = experiment.output("oracle_check")
        oracle = run_pipeline(config, oracle_dir, client=client, labels=gt_path) if pipeline.ok else None
    finally:
        client.close()
        client.cluster.close()
    print(f"pipeline on {workers} workers (predict with the sample model -> vote -> agglomerate -> paint):")
    for summary in pipeline.stages.values():
        print("  " + str(summary["format"]).replace("\n", "\n  "))
    if not pipeline.ok:
        print(f"the pipeline failed; see {experiment.log_path} and the stage logs above")
        return 1
    instances = str(pipeline.output)
    print(f"label:             {pipeline.instances} instances -> {instances}")
    report = experiment.output(EVALUATION)
    result = evaluate_with_config(config.evaluation, [instances], [gt_path], report)
    print(f"evaluate:          {summary_line(result).split(': ', 1)[1]} (FlyLight clDice metrics; the network "
          f"was trained on this crop)")
    if oracle is not None and oracle.ok:
        checked = evaluate_with_config(config.evaluation, [str(oracle.output)], [gt_path], oracle_dir / EVALUATION,
                                       write_images=False)
        seconds = sum(float(s.get("seconds", 0.0)) for s in oracle.stages.values())
        print(f"assembly check:    the same vote -> agglomerate -> paint on oracle patches (the ground truth made "
              f"into patches, what a perfect network predicts): {oracle.instances} instances, "
              f"{summary_line(checked).split(': ', 1)[1]} ({seconds:.1f} s)")
    print("where to look:")
    print(f"  prediction       {pipeline.prediction} (numinst, patches: uint8 = probability x 255)")
    print(f"  instances        {instances} (OME-Zarr labels, one channel per overlapping instance)")
    print(f"  report           {report / 'report.md'}")
    print(f"  config, log      {experiment.config_path}, {experiment.log_path}")
    print(f"done in {time.perf_counter() - started:.1f} s")
    return 0
