"""GPU check: the one command to run when a GPU machine is lent (``bash scripts/gpu_check.sh``); < 5 minutes.

On a synthetic ``--size``^3 tubes volume (3 channels) with the sample model (``ppp_dist/data/sample/model``):

1. starts dask-cuda's ``LocalCUDACluster`` (``[cluster] kind = "cuda"``: one worker per GPU, its threads =
   the machine's cores for the numba vote);
2. times the network alone on batches of tiles, with and without AMP (voxels/s), and the peak GPU memory;
3. runs fused predict -> vote -> agglomerate -> paint on the GPU workers (no patches stored);
4. predicts the volume on the GPU into a stored prediction and labels that on the CPU path (the label
   stage on a stored prediction): the labels must be byte-identical to the fused ones;
5. predicts a central crop on the GPU (without and with AMP) and on the CPU and reports how much the
   prediction itself differs (the network differs in the last bits on a GPU, so labels are compared
   from the stored prediction, not from two networks);
6. trains the FlyLight-sized default network for ``--train-iterations`` with AMP (it/s, peak memory).

It prints one table. Exit codes: 0 every check passed, 1 a check failed (labels differ, no GPU workers),
2 no CUDA device (one sentence) or bad arguments. ``--tiny`` runs the same steps on the CPU on a small
volume (a self-test of this script; the GPU rows then say what was skipped).
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import os
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

MIN_SIZE = 34  # one output tile of the sample model
TRAIN_MIN_SIZE = 160  # the default network's training input (140^3) with room for its sampling


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="gpu_check", description=__doc__.splitlines()[0])
    parser.add_argument("--size", type=int, default=256, help="edge of the synthetic volume (default 256)")
    parser.add_argument("--crop", type=int, default=128, help="edge of the GPU-vs-CPU prediction crop (default 128)")
    parser.add_argument("--batch", type=int, default=8, help="tiles per forward pass when timing the network")
    parser.add_argument("--train-iterations", type=int, default=20,
                        help="AMP training iterations of the default network (0 = skip)")
    parser.add_argument("--out", type=Path, default=None, help="keep the outputs and gpu_check.json here")
    parser.add_argument("--tiny", action="store_true", help="self-test on the CPU: small volume, tiny training")
    args = parser.parse_args(argv)
    if args.size < MIN_SIZE or args.crop < MIN_SIZE:
        parser.error(f"--size and --crop must be at least {MIN_SIZE} (one output tile of the sample model)")
    if args.batch < 1 or args.train_iterations < 0:
        parser.error("--batch must be >= 1 and --train-iterations >= 0")
    args.crop = min(args.crop, args.size)
    return args


def no_gpu_sentence(torch: Any) -> str | None:
    """Why there is no CUDA device to check, in one sentence; None when there is one."""
    if torch.cuda.is_available():
        return None
    if torch.version.cuda is None:
        return (f"gpu_check: no CUDA device: this torch {torch.__version__} is a CPU-only build, so there is "
                "nothing to check on this machine (--tiny runs the self-test on the CPU).")
    return (f"gpu_check: no CUDA device is visible to torch {torch.__version__} (CUDA {torch.version.cuda}), so "
            "there is nothing to check on this machine (--tiny runs the self-test on the CPU).")


def format_table(rows: list[tuple[str, str]]) -> str:
    """The rows as a two-column text table."""
    width = max(len("check"), *(len(name) for name, _ in rows))
    lines = [f"{'check':<{width}}  result", f"{'-' * width}  {'-' * 6}"]
    lines += [f"{name:<{width}}  {value}" for name, value in rows]
    return "\n".join(lines)


def compare_arrays(a: Any, b: Any) -> dict[str, Any]:
    """How two equally shaped arrays differ: {"values", "differ", "max_abs"}."""
    import numpy as np

    a, b = np.asarray(a), np.asarray(b)
    diff = a != b
    n = int(diff.sum())
    max_abs = int(np.abs(a.astype(np.int64) - b.astype(np.int64)).max()) if n else 0
    return {"values": int(a.size), "differ": n, "max_abs": max_abs}


def _difference(cmp: dict[str, Any], unit: str = "") -> str:
    if not cmp["differ"]:
        return f"identical ({cmp['values']:,} values)"
    return (f"{cmp['differ']:,} of {cmp['values']:,} values differ ({cmp['differ'] / cmp['values']:.2e}), "
            f"max |diff| {cmp['max_abs']}{unit}")


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    import torch

    reason = no_gpu_sentence(torch)
    if reason and not args.tiny:
        print(reason, file=sys.stderr)
        return 2
    with tempfile.TemporaryDirectory(prefix="gpu_check_") as tmp:
        root = args.out or Path(tmp)
        root.mkdir(parents=True, exist_ok=True)
        rows, results, ok = run_checks(args, root, cuda=reason is None)
        print(format_table(rows))
        if args.out:
            (root / "gpu_check.json").write_text(json.dumps(results, indent=1, default=str))
    return 0 if ok else 1


def run_checks(args: argparse.Namespace, root: Path, cuda: bool) -> tuple[list[tuple[str, str]], dict, bool]:
    """Every step of the module docstring; (table rows, numbers, all checks passed)."""
    import numpy as np
    import torch

    from ppp_dist.config import load_config
    from ppp_dist.data import write_synthetic_volume
    from ppp_dist.io.volumes import open_array, prepare_array
    from ppp_dist.learning.model import load_network
    from ppp_dist.learning.predict import predict_tile, tile_geometry
    from ppp_dist.pipeline.cluster import close_cluster, start_cluster
    from ppp_dist.pipeline.infer import run_pipeline
    from ppp_dist.pipeline.predict import predict_volume
    from ppp_dist.tasks.demo import sample_model

    started = time.perf_counter()
    dev = "cuda" if cuda else "cpu"
    cores = os.cpu_count() or 1
    rows: list[tuple[str, str]] = []
    results: dict[str, Any] = {}
    ok = True
    gib = 2 ** 30
    peak = (lambda: torch.cuda.max_memory_allocated() / gib) if cuda else (lambda: 0.0)
    reset = torch.cuda.reset_peak_memory_stats if cuda else (lambda: None)
    sync = torch.cuda.synchronize if cuda else (lambda: None)
    name = torch.cuda.get_device_name(0) if cuda else "cpu (--tiny self-test)"
    rows.append(("device", f"{name}, torch {torch.__version__}, CUDA {torch.version.cuda}, {cores} CPU cores"))

    checkpoint, model_config = sample_model()

    def config(**sets: Any):
        overrides = [f"{k}={json.dumps(v)}" for k, v in {
            "data.raw_key": "raw", "data.normalization": "none", "prediction.device": dev,
            "prediction.batch_size": 4, "training.use_amp": False, "cluster.dashboard_address": ":0",
            "general.overwrite": True, **sets}.items()]
        return load_config([model_config], overrides)

    # 1. the synthetic volume
    t0 = time.perf_counter()
    size = args.size
    sample = root / "tubes.zarr"
    write_synthetic_volume(sample, "tubes", (size,) * 3, (min(size, 64),) * 3, seed=0, n_workers=min(cores, 8),
                           overwrite=True)
    raw = f"{sample}/raw"
    rows.append(("synthetic volume", f"3 x {size}^3 tubes (float32) written in {time.perf_counter() - t0:.1f} s"))

    # 2. the network alone, without and with AMP
    base = config()
    net = load_network(base.model, 3, checkpoint, dev)
    geometry = tile_geometry(base.model)
    tiles = np.random.default_rng(0).random((args.batch, 3) + tuple(geometry.input_shape), dtype=np.float32)
    reset()
    for amp in ((False, True) if cuda else (False,)):
        predict_tile(net, tiles, geometry, amp=amp)  # warm-up
        sync()
        t0, n = time.perf_counter(), 3 if args.tiny else 20
        for _ in range(n):
            predict_tile(net, tiles, geometry, amp=amp)
        sync()
        vps = n * args.batch * int(np.prod(geometry.output_shape)) / (time.perf_counter() - t0)
        results[f"network_voxels_per_s_amp_{'on' if amp else 'off'}"] = vps
        rows.append((f"network, AMP {'on' if amp else 'off'}",
                     f"{vps:,.0f} voxels/s (batches of {args.batch} tiles {geometry.input_shape} -> "
                     f"{geometry.output_shape})"))
    if not cuda:
        rows.append(("network, AMP on", "skipped: AMP needs CUDA"))
    results["network_peak_gib"] = peak()
    rows.append(("peak GPU memory, network", f"{results['network_peak_gib']:.2f} GiB" if cuda else "- (CPU)"))

    # 3. LocalCUDACluster and the fused pipeline on it
    fused_cfg = config(**{"cluster.kind": "cuda", "cluster.threads_per_worker": cores,
                          "prediction.store_patches": False})
    t0 = time.perf_counter()
    client = start_cluster(fused_cfg.cluster)
    try:
        workers = client.scheduler_info()["workers"].values()
        gpu_workers = sum(1 for w in workers if w.get("resources", {}).get("GPU"))
        kind = type(getattr(client, "cluster", None)).__name__
        rows.append(("dask-cuda LocalCUDACluster",
                     f"{kind}: {gpu_workers} GPU worker(s) of {len(workers)}, {cores} threads each, started in "
                     f"{time.perf_counter() - t0:.1f} s"))
        if cuda and gpu_workers == 0:
            ok = False
            why = ("dask-cuda is not installed: pip install -c scripts/constraints.txt -e '.[gpu]'"
                   if importlib.util.find_spec("dask_cuda") is None else "see the warning above")
            rows[-1] = (rows[-1][0], f"{rows[-1][1]} -- FAILED: no GPU workers ({why})")
        if not gpu_workers:  # the CPU fallback cluster: run the fused stages on it without the GPU resource
            import dataclasses

            fused_cfg = dataclasses.replace(fused_cfg, cluster=dataclasses.replace(fused_cfg.cluster, kind="local"))
        fused = run_pipeline(fused_cfg, root / "fused", client=client, raw=raw, checkpoint=checkpoint,
                             resume=False)
        if cuda:
            results["fused_worker_peak_gib"] = max(client.run(_worker_peak_gib).values())
    finally:
        close_cluster(client)
    if not fused.ok:
        rows.append(("fused predict -> vote", "FAILED: " + "; ".join(s["format"] for s in fused.stages.values())))
        return rows, results, False
    seconds = sum(s["seconds"] for s in fused.stages.values())
    results["fused_seconds"] = seconds
    results["fused_voxels_per_s"] = size ** 3 / seconds
    rows.append(("fused predict -> vote -> paint", f"{size}^3 in {seconds:.1f} s = {size ** 3 / seconds:,.0f} "
                 f"voxels/s, {fused.instances} instances (vote {fused.stages['vote']['seconds']:.1f} s)"))
    if cuda:
        rows.append(("peak GPU memory, fused worker", f"{results['fused_worker_peak_gib']:.2f} GiB"))

    # 4. stored prediction on the GPU, labelled on the CPU path
    reset()
    stored = predict_volume(config(), checkpoint, raw, root / "prediction_gpu.zarr")
    results["stored_predict_voxels_per_s"] = stored["voxels_per_s"]
    rows.append((f"stored prediction ({dev})", f"{size}^3 in {stored['seconds']:.1f} s = "
                 f"{stored['voxels_per_s']:,.0f} voxels/s, peak GPU memory {peak():.2f} GiB"))
    cpu_cfg = config(**{"cluster.kind": "local", "cluster.n_workers": min(cores, 8)})
    client = start_cluster(cpu_cfg.cluster)
    try:
        labelled = run_pipeline(cpu_cfg, root / "cpu_path", client=client, prediction=str(root / "prediction_gpu.zarr"),
                                resume=False)
    finally:
        close_cluster(client)
    same = compare_arrays(open_array(fused.output)[...], open_array(labelled.output)[...])
    results["labels_fused_vs_cpu_path"] = same
    ok = ok and labelled.ok and same["differ"] == 0
    rows.append(("labels: fused vs CPU path", f"byte-identical ({same['values']:,} labels)" if not same["differ"]
                 else "DIFFER: " + _difference(same)))

    # 5. the prediction itself: GPU (fp32, AMP) vs CPU on a central crop
    crop = args.crop
    lo = (size - crop) // 2
    crop_raw = prepare_array(f"{root}/crop.zarr/raw", shape=(3, crop, crop, crop), chunks=(3, 64, 64, 64),
                             dtype="float32", overwrite=True)
    crop_raw[...] = open_array(raw)[:, lo:lo + crop, lo:lo + crop, lo:lo + crop]
    cpu_pred = predict_volume(config(**{"prediction.device": "cpu"}), checkpoint, f"{root}/crop.zarr/raw",
                              root / "crop_cpu.zarr")
    rows.append(("CPU prediction (crop)", f"{crop}^3 at {cpu_pred['voxels_per_s']:,.0f} voxels/s"))
    for amp in ((False, True) if cuda else ()):
        gpu_pred = predict_volume(config(**{"training.use_amp": amp}), checkpoint, f"{root}/crop.zarr/raw",
                                  root / f"crop_gpu_amp_{amp}.zarr")
        for key in ("patches", "numinst"):
            cmp = compare_arrays(open_array(gpu_pred["outputs"][key])[...], open_array(cpu_pred["outputs"][key])[...])
            results[f"prediction_{key}_gpu_amp_{'on' if amp else 'off'}_vs_cpu"] = cmp
            rows.append((f"prediction {key}, GPU AMP {'on' if amp else 'off'} vs CPU", _difference(cmp, "/255")))
    if not cuda:
        rows.append(("prediction, GPU vs CPU", "skipped: no GPU"))

    # 6. training the FlyLight-sized default network with AMP
    if args.train_iterations and not args.tiny and size < TRAIN_MIN_SIZE:
        rows.append(("train (AMP)",
                     f"skipped: the default network trains on {TRAIN_MIN_SIZE}^3 crops; --size is {size}"))
    elif args.train_iterations:
        from ppp_dist.config import config_from_table
        from ppp_dist.learning.train import run_train

        tiny_model = {"patch_shape": [3, 3, 3], "num_fmaps": 2, "fmap_inc_factors": [2.0],
                      "fmap_dec_factors": [2.0], "downsample_factors": [[2, 2, 2]],
                      "train_input_shape": [20, 20, 20], "predict_input_shape": [24, 24, 24]}
        train_cfg = config_from_table({
            "data": {"train_data": [str(sample)], "raw_key": "raw", "gt_key": "labels/gt_instances",
                     "num_channels": 3, "normalization": "none", "overlapping_instances": True},
            "model": tiny_model if args.tiny else {},
            "training": {"batch_size": 2, "use_amp": cuda, "device": dev, "num_workers": 0 if args.tiny else 4,
                         "checkpoint_every": args.train_iterations, "validate_every": 0, "log_every": 10,
                         "augmentation": {"probability_elastic": 0.0}}})
        reset()
        summary = run_train(train_cfg, root / "train", max_iterations=args.train_iterations)
        results["train_it_per_s"] = summary["it_per_s"]
        shapes = summary["shapes"]["train"]
        rows.append((f"train ({'AMP' if cuda else 'CPU'})", f"{summary['iterations_run']} iterations, "
                     f"{summary['it_per_s']:.2f} it/s (batch 2, {shapes['input']} -> {shapes['output']}), "
                     f"peak GPU memory {peak():.2f} GiB"))
    rows.append(("total", f"{time.perf_counter() - started:.0f} s; {'all checks passed' if ok else 'FAILED'}"))
    return rows, results, ok


def _worker_peak_gib() -> float:
    import torch

    return torch.cuda.max_memory_allocated() / 2 ** 30 if torch.cuda.is_initialized() else 0.0


if __name__ == "__main__":
    sys.exit(main())
