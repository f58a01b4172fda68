"""GPU check of the learning stage: short AMP training of the FlyLight-sized 3D network, then prediction.

Run through ``scripts/gpu_check.sh``. Without CUDA it prints "no CUDA device" and exits 0. On a GPU it
(1) trains the default [model] (FlyLight HEAD: 140^3 -> 48^3, 3 channels, P = 343) for ``--iterations`` on a
synthetic crossing-tubes sample with AMP, (2) predicts a random ``--size``^3 volume in-process, and prints
it/s, voxels/s (network only and end to end, zarr writing included) and peak GPU memory. Budget: < 5 minutes.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--iterations", type=int, default=50)
    parser.add_argument("--size", type=int, default=256, help="edge of the predicted volume")
    parser.add_argument("--workers", type=int, default=4, help="data-loading processes")
    parser.add_argument("--out", type=Path, default=None, help="keep the outputs here (default: a temp folder)")
    parser.add_argument("--tiny", action="store_true",
                        help="self-test of this script: a tiny network and volumes, also on the CPU")
    args = parser.parse_args(argv)

    import torch

    cuda = torch.cuda.is_available()
    if not cuda and not args.tiny:
        print("no CUDA device: nothing to check (exit 0)")
        return 0

    import numpy as np

    from ppp_dist.config import config_from_table
    from ppp_dist.data import write_synthetic_volume
    from ppp_dist.io.volumes import prepare_array
    from ppp_dist.learning.predict import predict_tile, predict_volume, tile_geometry
    from ppp_dist.learning.train import run_train
    from ppp_dist.model import load_network

    device = torch.cuda.get_device_name(0) if cuda else "cpu"
    dev = "cuda" if cuda else "cpu"
    print(f"device: {device}, torch {torch.__version__}, CUDA {torch.version.cuda}")
    peak = (lambda: torch.cuda.max_memory_allocated() / 2 ** 30) if cuda else (lambda: 0.0)
    reset = torch.cuda.reset_peak_memory_stats if cuda else (lambda: None)
    sync = torch.cuda.synchronize if cuda else (lambda: None)
    edge = 32 if args.tiny else 160
    model = ({"patch_shape": [3, 3, 3], "num_fmaps": 2, "fmap_inc_factors": [2.0], "fmap_dec_factors": [2.0],
              "downsample_factors": [[2, 2, 2]], "train_input_shape": [20, 20, 20],
              "predict_input_shape": [24, 24, 24]} if args.tiny else {})
    with tempfile.TemporaryDirectory() as tmp:
        root = args.out or Path(tmp)
        t0 = time.perf_counter()
        sample = root / "tubes.zarr"
        if not sample.exists():
            write_synthetic_volume(sample, "tubes", (edge,) * 3, (edge // 2,) * 3, seed=0,
                                   n_workers=1 if args.tiny else 4)
        print(f"synthetic training sample {edge}^3 written in {time.perf_counter() - t0:.1f} s")
        config = config_from_table({
            "data": {"train_data": [str(sample)], "raw_key": "raw", "gt_key": "labels/gt_instances",
                     "num_channels": 3, "normalization": "none", "overlapping_instances": True},
            "model": model,
            "training": {"batch_size": 2, "use_amp": True, "device": dev, "num_workers": args.workers,
                         "checkpoint_every": args.iterations, "validate_every": 0, "log_every": 10,
                         "augmentation": {"probability_elastic": 0.0}},  # CPU-bound at 140^3; see docs
            "prediction": {"device": dev, "batch_size": 1},
        })
        reset()
        summary = run_train(config, root / "exp", max_iterations=args.iterations)
        train_peak = peak()
        shapes = summary["shapes"]["train"]
        print(f"train: {summary['iterations_run']} iterations in {summary['seconds']:.1f} s = "
              f"{summary['it_per_s']:.2f} it/s (batch 2, {shapes['input']} -> {shapes['output']}, "
              f"AMP {'on' if cuda else 'off (CPU)'}), final loss "
              f"{summary['final_loss']:.4f}, peak GPU memory {train_peak:.2f} GiB")

        size = args.size
        raw = prepare_array(f"{root}/big.zarr/raw", shape=(3, size, size, size), chunks=(3, 64, 64, 64),
                            dtype="float32", axes="czyx")
        rng = np.random.default_rng(0)
        for z in range(0, size, 64):
            raw[:, z:z + 64] = rng.random((3, min(64, size - z), size, size), dtype=np.float32)
        net = load_network(config.model, 3, summary["checkpoint"], dev)
        geometry = tile_geometry(config.model)
        tile = rng.random((1, 3) + geometry.input_shape, dtype=np.float32)
        predict_tile(net, tile, geometry, amp=True)  # warm-up
        sync()
        reset()
        t0, n = time.perf_counter(), 10
        for _ in range(n):
            predict_tile(net, tile, geometry, amp=True)
        sync()
        net_vps = n * int(np.prod(geometry.output_shape)) / (time.perf_counter() - t0)
        result = predict_volume(config, summary["checkpoint"], f"{root}/big.zarr/raw", root / "pred.zarr")
        predict_peak = peak()
        print(f"predict: network only {net_vps:,.0f} voxels/s (tiles {geometry.input_shape} -> "
              f"{geometry.output_shape}); {size}^3 volume end to end (uint8 patches to zarr) in "
              f"{result['seconds']:.1f} s = {result['voxels_per_s']:,.0f} voxels/s; peak GPU memory "
              f"{predict_peak:.2f} GiB")
        print(json.dumps({"device": device, "train_it_per_s": summary["it_per_s"], "train_peak_gib": train_peak,
                          "predict_network_voxels_per_s": net_vps,
                          "predict_volume_voxels_per_s": result["voxels_per_s"],
                          "predict_peak_gib": predict_peak}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
