"""Train the 2D nuclei demo on the CPU and score it on held-out synthetic images (docs/learning.md).

Example::

    python scripts/train_demo.py --out demo_nuclei2d            # data + training + evaluation
    python scripts/train_demo.py --out demo_nuclei2d --iterations 50 --threads 2

Writes ``OUT/data/{train,val,test}/*.zarr`` (touching_nuclei_2d, 256 x 256; seeds 0-7, 50, 100-103),
trains into ``OUT/exp`` with ``configs/demo_nuclei2d.toml``, predicts every test image, assembles the
instances with ``ppp_dist.ops.assemble`` and the ``[vote]`` settings, and compares with the connected
components of the predicted foreground. Prints a table and writes ``OUT/summary.json``.
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
TRAIN_SEEDS, VAL_SEEDS, TEST_SEEDS = range(8), (50,), range(100, 104)


def _write_data(data: Path) -> None:
    from ppp_dist.data import write_synthetic_volume

    for split, seeds in (("train", TRAIN_SEEDS), ("val", VAL_SEEDS), ("test", TEST_SEEDS)):
        for seed in seeds:
            path = data / split / f"nuclei_{seed:03d}.zarr"
            if not path.exists():
                write_synthetic_volume(path, "nuclei2d", (256, 256), (128, 128), seed=seed)


def _score(config, checkpoint: str, sample: Path, out: Path) -> dict:
    from scipy import ndimage

    from ppp_dist.io.volumes import open_array
    from ppp_dist.ops.assemble import assemble
    from ppp_dist.pipeline.predict import predict_volume
    from ppp_dist.tasks.evaluation import evaluate_arrays

    pred = predict_volume(config, checkpoint, f"{sample}/raw", out)
    numinst = open_array(f"{out}/fg")[...]
    patches = open_array(f"{out}/patches")[...]
    v = config.vote
    started = time.perf_counter()
    labels = assemble(patches, numinst, config.model.patch_shape, patch_threshold=v.patch_threshold,
                      cover_threshold=v.cover_threshold, numinst_thresholds=v.numinst_thresholds,
                      consensus=v.consensus, different_rule=v.different_rule, selection=v.selection,
                      partition=v.partition, edge_threshold=v.edge_threshold,
                      max_num_inst=config.model.max_num_inst)
    assemble_s = time.perf_counter() - started
    gt = open_array(f"{sample}/labels/gt_instances")[...]
    baseline = ndimage.label(numinst[0] > 127)[0][None].astype(np.uint32)
    ppp, cc = evaluate_arrays(gt, labels), evaluate_arrays(gt, baseline)
    return {"sample": sample.name, "ppp_avS": ppp["avS"], "ppp_S_0.5": ppp["S_0.5"], "cc_avS": cc["avS"],
            "cc_S_0.5": cc["S_0.5"], "predict_s": pred["seconds"], "assemble_s": assemble_s,
            "voxels_per_s": pred["voxels_per_s"]}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=Path("demo_nuclei2d"))
    parser.add_argument("--config", type=Path, default=ROOT / "configs" / "demo_nuclei2d.toml")
    parser.add_argument("--iterations", type=int, default=None, help="default: training.max_iterations")
    parser.add_argument("--threads", type=int, default=1, help="torch threads of the training process")
    parser.add_argument("--set", action="append", default=[], metavar="SECTION.KEY=VALUE")
    args = parser.parse_args(argv)

    import torch

    from ppp_dist.config import load_config
    from ppp_dist.errors import PppDistError
    from ppp_dist.learning.train import run_train
    from ppp_dist.logs import setup_logging

    setup_logging("INFO")
    logging.getLogger("ppp_dist.io.volumes").setLevel(logging.WARNING)
    torch.set_num_threads(args.threads)
    data = args.out / "data"
    try:
        _write_data(data)
        config = load_config([args.config], overrides=[f"data.train_data=['{data / 'train'}']",
                                                       f"data.val_data=['{data / 'val'}']", *args.set])
        summary = run_train(config, args.out / "exp", max_iterations=args.iterations)
        rows = [_score(config, summary["checkpoint"], sample, args.out / "pred" / sample.name)
                for sample in sorted((data / "test").glob("*.zarr"))]
    except PppDistError as err:
        print(f"train_demo: error: {err}", file=sys.stderr)
        return 2
    mean = {k: float(np.mean([r[k] for r in rows])) for k in rows[0] if k != "sample"}
    result = {"training": {k: v for k, v in summary.items() if k != "shapes"}, "test": rows, "mean": mean}
    (args.out / "summary.json").write_text(json.dumps(result, indent=2, default=str))
    print(f"trained {summary['iterations']} iterations, {summary['iterations_run']} now in "
          f"{summary['seconds']:.0f} s ({summary['it_per_s']:.2f} it/s), final loss {summary['final_loss']:.4f}")
    print(f"{'sample':<20} {'ppp avS':>8} {'ppp S0.5':>8} {'cc avS':>8} {'cc S0.5':>8}")
    for r in rows + [{"sample": "mean", **mean}]:
        print(f"{r['sample']:<20} {r['ppp_avS']:8.3f} {r['ppp_S_0.5']:8.3f} {r['cc_avS']:8.3f} {r['cc_S_0.5']:8.3f}")
    print(f"prediction {mean['voxels_per_s']:.0f} voxels/s, assembly {mean['assemble_s']:.1f} s per image")
    return 0


if __name__ == "__main__":
    sys.exit(main())
