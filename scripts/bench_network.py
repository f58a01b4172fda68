"""The network's rate: output voxels per second of one prediction tile, for the 1 TB model.

Builds the network of a config (random weights: the rate does not depend on them) and times
``learning.predict.predict_tile`` on its prediction tile (``[model] predict_input_shape``), after one warm-up
call: output voxels (the kept tile) per second, per torch thread count. With a GPU (``--device cuda``) the
same with and without AMP. The default config's network (3D U-Net, 20 feature maps x 3 per level, 7^3 patches,
156^3 input -> 68^3 output) is what the 1 TB model uses; ``--config`` times another.

    .venv/bin/python scripts/bench_network.py [--config configs/default.toml] [--threads 1 2] [--repeat 2]
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np

ROOT = Path(__file__).resolve().parents[1]


def measure(config_path: str, threads: list[int], repeat: int, device: str = "cpu") -> dict[str, Any]:
    import torch

    from ppp_dist.config import load_config
    from ppp_dist.learning.model import build_model
    from ppp_dist.learning.predict import predict_tile, tile_geometry

    config = load_config([config_path])
    geometry = tile_geometry(config.model)
    net = build_model(config.model, config.data.num_channels).eval().to(device)
    params = sum(p.numel() for p in net.parameters())
    rng = np.random.default_rng(0)
    inputs = rng.random((1, config.data.num_channels, *geometry.input_shape), dtype=np.float32)
    out_voxels = int(np.prod(geometry.output_shape))
    rows = []
    for amp in ([False, True] if device.startswith("cuda") else [False]):
        for t in threads:
            torch.set_num_threads(t)
            predict_tile(net, inputs, geometry, amp=amp)  # warm-up (allocations, kernel selection)
            best = float("inf")
            for _ in range(repeat):
                if device.startswith("cuda"):
                    torch.cuda.synchronize()
                t0 = time.perf_counter()
                predict_tile(net, inputs, geometry, amp=amp)
                if device.startswith("cuda"):
                    torch.cuda.synchronize()
                best = min(best, time.perf_counter() - t0)
            rows.append({"threads": t, "amp": amp, "seconds_per_tile": round(best, 3),
                         "voxels_per_s": out_voxels / best})
    return {"config": config_path, "device": device, "input": list(geometry.input_shape),
            "output": list(geometry.output_shape), "parameters": int(params), "rows": rows}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--config", default=str(ROOT / "configs" / "default.toml"))
    ap.add_argument("--threads", type=int, nargs="+", default=[1, 2])
    ap.add_argument("--repeat", type=int, default=2)
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--out", default="")
    args = ap.parse_args(argv)
    result = measure(args.config, args.threads, args.repeat, args.device)
    print(json.dumps(result))
    if args.out:
        Path(args.out).write_text(json.dumps(result, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
