"""Benchmark of the in-process label (the blockwise pipeline with one block, ``client=None``) against the
whole-volume ``ops.assemble`` it replaced, on oracle predictions stored in zarr.

Both read the same prediction group and write the same labels array; each run is a fresh Python process.
Memory is the peak resident memory during the run above what the process held before it (sampled every
5 ms with ``bench_common.RssSampler``, so a peak shorter than that can be missed). The runs alternate
(assemble, label, assemble, ...) and the fastest of ``--repeat`` is shown; one warm-up run of each fills
numba's cache first. The labels of the two are compared byte for byte.

    .venv/bin/python scripts/bench_label.py [--repeat 3] [--quick] [--only nuclei] [--out runs/bench_label.json]

Prints a markdown table and writes JSON. Timings depend on what else runs on the machine.
"""

from __future__ import annotations

import argparse
import importlib
import json
import os
import platform
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_common import RssSampler, rss_mib  # noqa: E402  (nothing there imports ppp_dist)

MODES = ("assemble", "label")


def peak_above_start(fn: Callable[[], Any]) -> tuple[Any, float]:
    """(``fn()``, MiB of resident memory at its peak above the start), sampled every 5 ms."""
    start = rss_mib()
    sampler = RssSampler({"run": os.getpid()}, interval=0.005)
    sampler.start()
    try:
        out = fn()
    finally:
        sampler.stop()
    return out, sampler.peaks()["run"] - start


def write_oracle(group: Path, instances: np.ndarray, patch_shape: tuple[int, int, int]) -> str:
    """Oracle prediction group: patch targets and one-hot numinst as uint8 (value / 255)."""
    from ppp_dist.io.volumes import prepare_array
    from ppp_dist.ops.patches import numinst_onehot, numinst_target, patch_targets

    inst = instances if instances.ndim == 4 else instances[None]
    patches = (patch_targets(inst, patch_shape) * np.uint8(255)).astype(np.uint8)
    numinst = np.rint(numinst_onehot(numinst_target(inst, 2)) * 255).astype(np.uint8)
    chunks = tuple(min(64, s) for s in inst.shape[1:])
    for name, data in (("patches", patches), ("numinst", numinst)):
        prepare_array(f"{group}/{name}", shape=data.shape, chunks=(data.shape[0],) + chunks, dtype="uint8",
                      axes="czyx")[...] = data
    return str(group)


def _config(patch_shape: tuple[int, int, int]):
    from ppp_dist.config import config_from_table

    return config_from_table({"model": {"patch_shape": list(patch_shape)}, "vote": {"blockwise": False}})


def run_one(mode: str, group: str, output: str, patch_shape: tuple[int, int, int]) -> dict[str, float]:
    """One timed run in this process (called in a fresh subprocess)."""
    from ppp_dist.io.volumes import open_array, prepare_array
    from ppp_dist.ops.assemble import assemble
    from ppp_dist.pipeline.settings import assembly_settings
    from ppp_dist.tasks.label import label_volume

    for module in ("agglomerate", "infer", "paint", "relabel", "runner", "sources", "vote"):  # imports are not
        importlib.import_module(f"ppp_dist.pipeline.{module}")  # the run's memory: loaded before it starts
    importlib.import_module("ppp_dist.io.stores")
    config = _config(patch_shape)

    def label() -> int:
        return int(label_volume(config, group, output)["instances"])

    def whole_volume() -> int:
        settings = assembly_settings(config)
        labels = assemble(np.asarray(open_array(f"{group}/patches")[...]),
                          np.asarray(open_array(f"{group}/numinst")[...]), settings)
        labels = labels if settings.overlap_channels else labels[:1]
        prepare_array(f"{output}/instances", shape=labels.shape, dtype="uint32", axes="czyx", kind="labels",
                      chunks=(labels.shape[0],) + tuple(min(64, s) for s in labels.shape[1:]),
                      overwrite=True)[...] = labels
        return int(labels.max())

    started = time.perf_counter()
    instances, peak = peak_above_start(label if mode == "label" else whole_volume)
    return {"seconds": time.perf_counter() - started, "peak_mib": peak, "instances": instances}


def _subprocess(mode: str, group: str, output: str, patch_shape: tuple[int, int, int]) -> dict[str, float]:
    cmd = [sys.executable, __file__, "--one", mode, group, output, ",".join(map(str, patch_shape))]
    proc = subprocess.run(cmd, capture_output=True, text=True, check=False)
    if proc.returncode != 0:
        raise RuntimeError(f"{mode} on {group} failed: {proc.stderr.strip().splitlines()[-1:]}")
    return json.loads(proc.stdout.strip().splitlines()[-1])


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--quick", action="store_true", help="smaller scenes (as bench_assembly --quick)")
    parser.add_argument("--only", default="", help="datasets whose name contains this")
    parser.add_argument("--out", default="")
    parser.add_argument("--one", nargs=4, metavar=("MODE", "GROUP", "OUTPUT", "PATCH"), help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.one:
        mode, group, output, patch = args.one
        print(json.dumps(run_one(mode, group, output, tuple(int(p) for p in patch.split(",")))))
        return 0
    from bench_assembly import datasets  # the same scenes and patch shapes

    from ppp_dist.io.volumes import open_array

    rows = []
    with tempfile.TemporaryDirectory(prefix="bench_label_") as tmp:
        for name, make in datasets(args.quick).items():
            if args.only and args.only not in name:
                continue
            instances, patch_shape = make()
            root = Path(tmp) / name.split()[0]
            group = write_oracle(root / "pred.zarr", instances, patch_shape)
            runs: dict[str, list[dict[str, float]]] = {m: [] for m in MODES}
            for mode in MODES:  # warm-up: numba's cache
                _subprocess(mode, group, str(root / f"{mode}.zarr"), patch_shape)
            for _ in range(args.repeat):
                for mode in MODES:
                    runs[mode].append(_subprocess(mode, group, str(root / f"{mode}.zarr"), patch_shape))
            same = np.array_equal(np.asarray(open_array(f"{root}/assemble.zarr/instances")[...]),
                                  np.asarray(open_array(f"{root}/label.zarr/instances")[...]))
            best = {m: min(r["seconds"] for r in runs[m]) for m in MODES}
            peak = {m: max(r["peak_mib"] for r in runs[m]) for m in MODES}
            rows.append({"dataset": name, "shape": list(instances.shape[-3:]),
                         "instances": runs["label"][0]["instances"],
                         "assemble_s": best["assemble"], "label_s": best["label"],
                         "time_ratio": best["label"] / best["assemble"], "assemble_peak_mib": peak["assemble"],
                         "label_peak_mib": peak["label"], "memory_ratio": peak["label"] / peak["assemble"],
                         "identical": bool(same), "runs": runs})
            r = rows[-1]
            print(f"{name}: assemble {r['assemble_s']:.2f} s / {r['assemble_peak_mib']:.0f} MiB, label "
                  f"{r['label_s']:.2f} s / {r['label_peak_mib']:.0f} MiB, identical {same}", flush=True)
    print(f"\n{platform.processor() or platform.machine()}, {os.cpu_count()} CPUs; fastest of {args.repeat} runs; "
          "memory: the largest peak above the process's memory before the run\n")
    print("| dataset | shape | instances | ops.assemble s | label s | time ×assemble | assemble MiB | label MiB | "
          "memory ×assemble | identical |")
    print("|---|---|---:|---:|---:|---:|---:|---:|---:|---|")
    for r in rows:
        print(f"| {r['dataset']} | {'×'.join(map(str, r['shape']))} | {r['instances']} | {r['assemble_s']:.2f} | "
              f"{r['label_s']:.2f} | {r['time_ratio']:.2f} | {r['assemble_peak_mib']:.0f} | "
              f"{r['label_peak_mib']:.0f} | {r['memory_ratio']:.2f} | {'yes' if r['identical'] else 'NO'} |")
    if args.out:
        Path(args.out).parent.mkdir(parents=True, exist_ok=True)
        Path(args.out).write_text(json.dumps({"rows": rows, "repeat": args.repeat, "quick": args.quick}, indent=1))
    return 0 if all(r["identical"] for r in rows) else 1


if __name__ == "__main__":
    raise SystemExit(main())
