"""Benchmark of the blockwise pipeline (vote -> agglomerate -> paint) on synthetic tubes with oracle patches.

The oracle prediction is written block by block (``scene.render(box + h)`` -> ``patch_targets`` -> crop), so
the driver never holds the volume. One LocalCluster worker process (1 thread) runs the blocks; its peak RSS
(``ru_maxrss``) after the run is the number that must not grow with the volume (invariant 5).

    .venv/bin/python scripts/bench_pipeline.py --shapes 128 256 --block 64 --patch 5 [--out runs/bench_pipeline.json]
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import shutil
import threading
import tempfile
import time
from pathlib import Path

import numpy as np
import psutil


def write_oracle_blockwise(group: Path, shape, patch, chunk, seed=0) -> None:
    from ppp_dist.data.synthetic import make_scene
    from ppp_dist.geometry import tile
    from ppp_dist.io.volumes import prepare_array, write_box
    from ppp_dist.ops.patches import numinst_onehot, numinst_target, patch_targets

    scene = make_scene("tubes", shape, seed, channels="packed")  # few channels: patch_targets stays fast
    h = tuple(p // 2 for p in patch)
    P = int(np.prod(patch))
    pa = prepare_array(f"{group}/patches", shape=(P,) + tuple(shape), chunks=(P,) + tuple(chunk), dtype="uint8",
                       axes="czyx")
    na = prepare_array(f"{group}/numinst", shape=(3,) + tuple(shape), chunks=(3,) + tuple(chunk), dtype="uint8",
                       axes="czyx")
    for spec in tile(shape, chunk):
        box = spec.write_box.grow(h)  # render outside the volume too: zero there, as patch_targets sees it
        _, inst = scene.render(box)
        inner = tuple(slice(a, a + s) for a, s in zip(h, spec.write_box.shape))
        # patch targets near the volume border must not see instances outside the volume
        vol_mask = np.zeros(box.shape, bool)
        vol_mask[box.intersect(scene.volume).relative_to(box)] = True
        inst = inst * vol_mask
        pt = patch_targets(inst, patch)[(slice(None), *inner)] * np.uint8(255)
        ni = np.rint(numinst_onehot(numinst_target(inst))[(slice(None), *inner)] * 255).astype(np.uint8)
        write_box(pa, spec.write_box, pt.astype(np.uint8))
        write_box(na, spec.write_box, ni)


class _Sampler(threading.Thread):
    """Polls the RSS of a process every 50 ms (psutil), keeping the maximum in MiB."""

    def __init__(self, pid: int) -> None:
        super().__init__(daemon=True)
        self.proc = psutil.Process(pid)
        self.stop = threading.Event()
        self.peak = 0.0

    def run(self) -> None:
        while not self.stop.is_set():
            try:
                self.peak = max(self.peak, self.proc.memory_info().rss / 2 ** 20)
            except psutil.Error:
                return
            self.stop.wait(0.05)


def _peak_rss_mib() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0


def run(shape, block, patch, workdir: Path) -> dict:
    from distributed import Client, LocalCluster

    from ppp_dist.config import config_from_table
    from ppp_dist.pipeline.infer import run_pipeline

    group = workdir / "pred.zarr"
    t0 = time.perf_counter()
    write_oracle_blockwise(group, shape, patch, block)
    t_write = time.perf_counter() - t0
    cfg = config_from_table({"model": {"patch_shape": list(patch)}, "vote": {"block_shape": list(block)},
                             "cluster": {"threads_per_worker": 1}})
    with LocalCluster(n_workers=1, threads_per_worker=1, processes=True, dashboard_address=None,
                      silence_logs=50, memory_limit=0) as cluster, Client(cluster) as client:
        pid = list(client.run(os.getpid).values())[0]
        base = psutil.Process(pid).memory_info().rss / 2 ** 20
        sampler = _Sampler(pid)
        sampler.start()
        try:
            res = run_pipeline(cfg, workdir / "exp", client=client, prediction=str(group))
        finally:
            sampler.stop.set()
            sampler.join()
        peak = sampler.peak
    stages = {k: {kk: v[kk] for kk in ("blocks", "seconds", "voxels_per_s") if kk in v}
              for k, v in res["stages"].items()}
    return {"shape": list(shape), "block": list(block), "patch": list(patch), "instances": res.get("instances"),
            "ok": res["ok"], "write_oracle_s": round(t_write, 1), "worker_rss_idle_mib": round(base, 1),
            "worker_peak_rss_mib": round(peak, 1), "driver_peak_rss_mib": round(_peak_rss_mib(), 1),
            "stages": stages}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--shapes", type=int, nargs="+", default=[128, 256])
    ap.add_argument("--block", type=int, default=64)
    ap.add_argument("--patch", type=int, default=5)
    ap.add_argument("--out", default="runs/bench_pipeline.json")
    args = ap.parse_args()
    results = []
    for s in args.shapes:
        work = Path(tempfile.mkdtemp(prefix=f"bench_pipeline_{s}_"))
        try:
            r = run((s, s, s), (args.block,) * 3, (args.patch,) * 3, work)
        finally:
            shutil.rmtree(work, ignore_errors=True)
        results.append(r)
        print(json.dumps(r))
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(results, indent=1))


if __name__ == "__main__":
    main()
