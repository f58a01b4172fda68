"""The main job on the bundled FlyLight sample: the README's first command.

It writes the sample into the experiment folder as OME-Zarr, starts a local dask cluster (dashboard link
printed), reads the volume back blockwise on the workers, plans every stage, turns the sample's ground truth
into patches (what a perfect network would predict), runs the distributed vote -> agglomerate -> paint on
the cluster with the SQLite graph database, evaluates with the FlyLight metrics and prints where to look.
A network trained on the sample is not part of it yet: a FlyLight-sized network needs ~90 s per training
iteration on a CPU.
"""

from __future__ import annotations

import argparse
import logging
import time

import numpy as np

from ppp_dist import tasks
from ppp_dist.experiment import Experiment, open_experiment
from ppp_dist.logs import setup_logging

logger = logging.getLogger(__name__)

DEMO_SETTINGS = ("data.num_channels=3", "data.overlapping_instances=true", "model.patch_shape=[7, 7, 7]",
                 "vote.block_shape=[25, 25, 25]", "evaluation.criterion=cldice",
                 "evaluation.min_instance_size=500")


def write_sample(experiment: Experiment) -> tuple[str, str]:
    """Write the FlyLight sample as ``sample.zarr/raw`` (float32) and ``sample.zarr/gt_instances``."""
    from ppp_dist.data.flylight import load_flylight
    from ppp_dist.io import volumes

    sample = load_flylight()
    store = experiment.output("sample.zarr")
    raw_path, gt_path = f"{store}/raw", f"{store}/labels/gt_instances"
    spatial = sample.raw.shape[1:]
    chunks = (25, 25, 25)
    raw = volumes.prepare_array(raw_path, shape=sample.raw.shape, chunks=(sample.raw.shape[0],) + chunks,
                                dtype="float32", overwrite=True, kind="image")
    raw[...] = sample.raw
    gt = volumes.prepare_array(gt_path, shape=sample.instances.shape,
                               chunks=(sample.instances.shape[0],) + chunks, dtype="uint16",
                               overwrite=True, kind="labels")
    gt[...] = sample.instances
    logger.info("sample written: %s and %s, %s voxels", raw_path, gt_path, spatial)
    return raw_path, gt_path


def start_cluster(n_workers: int):
    """A LocalCluster with one process per worker and one thread each; the dashboard on a free port."""
    from distributed import Client, LocalCluster

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


def write_oracle_prediction(experiment: Experiment, patch_shape: tuple[int, int, int]) -> str:
    """Ground truth turned into a prediction (patches and numinst as uint8): what a perfect network gives."""
    from ppp_dist.data.flylight import load_flylight
    from ppp_dist.io import volumes
    from ppp_dist.ops.patches import numinst_onehot, numinst_target, patch_targets

    instances = load_flylight().instances
    store = experiment.output("oracle_prediction.zarr")
    patches = patch_targets(instances, patch_shape) * np.uint8(255)
    numinst = (numinst_onehot(numinst_target(instances)) * 255).astype(np.uint8)
    for name, data in (("patches", patches), ("numinst", numinst)):
        out = volumes.prepare_array(f"{store}/{name}", shape=data.shape, chunks=(data.shape[0], 25, 25, 25),
                                    dtype="uint8", overwrite=True, axes="czyx", kind="image")
        out[...] = data
    return str(store)


def run_demo(args: argparse.Namespace) -> int:
    from ppp_dist.plan import format_bytes, plan_volume

    started = time.perf_counter()
    overrides = list(DEMO_SETTINGS) + list(args.overrides)
    experiment = open_experiment(root=args.root, exp=args.exp, configs=args.config, overrides=overrides,
                                 name="demo")
    setup_logging("DEBUG" if args.verbose else experiment.config.general.log_level, experiment.log_path)
    print(f"experiment folder: {experiment.path}")
    raw_path, gt_path = write_sample(experiment)
    from ppp_dist.io.database import open_database
    with open_database(experiment.config.database, experiment.path) as db:
        run_id = db.register_run(experiment.config_path.read_text())
        print(f"run database:      {db.where} ({db.backend}, run {run_id})")
    from ppp_dist.evaluate import evaluate_with_config
    from ppp_dist.pipeline.infer import run_pipeline
    from ppp_dist.run_tasks import summary_line

    oracle = write_oracle_prediction(experiment, experiment.config.model.patch_shape)
    client = start_cluster(max(1, args.workers))
    try:
        print(f"dask dashboard:    {client.dashboard_link}")
        summary = blockwise_summary(client, raw_path, gt_path)
        print(f"sample:            {raw_path} (3 x 50^3 float32), {gt_path} (3 neurons, one per channel)")
        print(f"blockwise check:   raw channel means {summary['raw_mean']}, instance voxels "
              f"{summary['instance_voxels']}, overlap voxels {summary['overlap_voxels']} "
              f"({summary['tasks']} dask tasks on {args.workers} workers)")
        print("plan:")
        for stage in plan_volume(experiment.config, (50, 50, 50)):
            print(f"  {stage.stage:<8} {stage.blocks:>3} block(s) of {stage.block_shape}, halo {stage.halo}, "
                  f"~{format_bytes(stage.memory_bytes)} per block: {stage.note}")
        pipeline = run_pipeline(experiment.config, experiment.path, client=client, prediction=oracle)
    finally:
        client.close()
        client.cluster.close()
    print("pipeline on oracle patches (the ground truth made into patches: checks the assembly, not a model):")
    for stage in pipeline["stages"].values():
        print("  " + stage["format"].replace("\n", "\n  "))
    instances = pipeline["output"]
    print(f"label (oracle):    {pipeline['instances']} instances, blockwise on {args.workers} workers -> {instances}")
    result = evaluate_with_config(experiment.config.evaluation, [instances], [gt_path],
                                  experiment.output("evaluation"))
    print(f"evaluate (oracle): {summary_line(result).split(': ', 1)[1]} "
          f"(report {experiment.output('evaluation') / 'report.md'})")
    missing = [t for t in tasks.TASKS.values() if not t.available]
    if missing:
        print("not in this version yet: " + "; ".join(f"{t.name} ({t.arrives_with})" for t in missing))
    print(f"done in {time.perf_counter() - started:.1f} s; config {experiment.config_path}, "
          f"log {experiment.log_path}")
    return 0
