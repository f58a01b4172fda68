"""Benchmark of the blockwise pipeline (vote -> agglomerate -> paint) on synthetic volumes with oracle patches.

Oracle = the ground truth made into patches (what a perfect network would predict). Two ways to feed it:

* ``stored``: the oracle prediction group (``patches`` (P, Z, Y, X) uint8 + ``numinst`` (3, ...)) is written
  block by block (``scene.render(box + h)`` -> ``patch_targets`` -> crop), so the driver never holds the
  volume; then ``run_pipeline(prediction=...)``;
* ``fused``: only the label stack (K, Z, Y, X) uint16 is written and ``run_pipeline(labels=...)`` computes each
  block's patches on the fly (stores none; available when ``run_pipeline`` has a ``labels`` parameter).

A ``LocalCluster`` of ``--workers`` processes (1 thread each) runs the blocks. The RSS of every worker and of
the driver is polled every 50 ms; per stage (vote, agglomerate, paint, relabel) the script reports seconds,
voxels/s and the peak RSS of the workers and of the driver during that stage (``ppp_dist.pipeline.runner.run_stage``
and ``agglomerate.agglomerate_instances`` are wrapped here to time-stamp the stages). The graph storage is
reported as rows of every table and bytes on disk: the database plus what vote leaves for paint
(``pipeline/vote.zarr``, ``pipeline/vote_rows``) -- everything the pipeline stores besides the labels and
its input. ``--whole`` also runs
``ops.assemble`` on the whole stored prediction in a subprocess (time, peak RSS, and whether its labels equal
the pipeline's bytes): the cost of halos and scheduling.

    .venv/bin/python scripts/bench_pipeline.py --shapes 128 256 --block 64 --patch 5 [--workers 1 2] [--whole]
        [--kind tubes|nuclei2d|worms] [--mode stored|fused] [--out runs/bench_pipeline.json]

For the 2D kinds ``--shapes 4096`` means 1 x 4096 x 4096 and the patch is 1 x p x p.
"""

from __future__ import annotations

import argparse
import contextlib
import inspect
import json
import math
import os
import shutil
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))

from bench_common import RssSampler, disk_bytes, maxrss_mib, run_json_subprocess  # noqa: E402

PLANAR = ("nuclei2d", "worms")


def spatial(kind: str, size: int | tuple[int, ...]) -> tuple[int, int, int]:
    """(Z, Y, X) of a cubic 3D or square 2D volume of side ``size`` (or a given 3-tuple)."""
    if not isinstance(size, int):
        return tuple(int(s) for s in size)  # type: ignore[return-value]
    return (1, size, size) if kind in PLANAR else (size, size, size)


def patch_of(kind: str, p: int) -> tuple[int, int, int]:
    return (1, p, p) if kind in PLANAR else (p, p, p)


def block_of(kind: str, b: int, shape: tuple[int, int, int]) -> tuple[int, int, int]:
    return tuple(min(x, s) for x, s in zip((1, b, b) if kind in PLANAR else (b, b, b), shape))  # type: ignore


def make_scene(kind: str, shape, seed: int):
    from ppp_dist.data.synthetic import make_scene as _make

    params = {"channels": "packed"} if kind in ("tubes", "worms") else {}  # few channels: patch_targets fast
    return _make(kind, shape, seed, **params)


def _render_in_volume(scene, box):
    """Instances of ``box`` (may reach outside the volume), zero outside the volume."""
    _, inst = scene.render(box)
    vol_mask = np.zeros(box.shape, bool)
    vol_mask[box.intersect(scene.volume).relative_to(box)] = True
    return inst * vol_mask


def write_oracle_blockwise(group: Path | str, shape, patch, chunk, seed: int = 0, kind: str = "tubes",
                           dtype: str = "uint8", noise: float = 0.0, zero_background: bool = True) -> dict[str, Any]:
    """Write the oracle prediction group block by block; return seconds, instances and layers.

    ``dtype``: uint8 (value x 255) or float16 (0/1). ``noise`` > 0 stores soft values instead (0.8 / 0.2 with
    seeded uniform jitter of +-``noise``), closer to what a network writes (for measuring compressed sizes).
    ``zero_background``: as the predict stage does by default (``[prediction] zero_background``), the patches
    of voxels that are background at the default numinst thresholds are stored as zeros.
    """
    from ppp_dist.geometry import tile
    from ppp_dist.io.volumes import prepare_array, write_box
    from ppp_dist.learning.background import zero_background as zero
    from ppp_dist.ops.patches import numinst_onehot, numinst_target, patch_targets

    t0 = time.perf_counter()
    scene = make_scene(kind, shape, seed)
    h = tuple(p // 2 for p in patch)
    P = int(np.prod(patch))
    pa = prepare_array(f"{group}/patches", shape=(P,) + tuple(shape), chunks=(P,) + tuple(chunk), dtype=dtype,
                       axes="czyx")
    na = prepare_array(f"{group}/numinst", shape=(3,) + tuple(shape), chunks=(3,) + tuple(chunk), dtype=dtype,
                       axes="czyx")
    rng = np.random.default_rng(seed)
    for spec in tile(shape, chunk):
        box = spec.write_box.grow(h)  # render outside the volume too: zero there, as patch_targets sees it
        inst = _render_in_volume(scene, box)
        inner = tuple(slice(a, a + s) for a, s in zip(h, spec.write_box.shape))
        pt = patch_targets(inst, patch)[(slice(None), *inner)].astype(np.float32)
        ni = numinst_onehot(numinst_target(inst))[(slice(None), *inner)]
        if noise > 0:
            pt = np.clip(0.2 + 0.6 * pt + rng.uniform(-noise, noise, pt.shape).astype(np.float32), 0, 1)
            ni = np.clip(0.05 + 0.85 * ni + rng.uniform(-noise, noise, ni.shape).astype(np.float32), 0, 1)
        if dtype == "uint8":
            pt, ni = np.rint(pt * 255).astype(np.uint8), np.rint(ni * 255).astype(np.uint8)
        else:
            pt, ni = pt.astype(dtype), ni.astype(dtype)
        if zero_background:
            pt = zero({"patches": pt, "numinst": ni}, (0.9, 0.1))["patches"]
        write_box(pa, spec.write_box, pt)
        write_box(na, spec.write_box, ni)
    return {"seconds": time.perf_counter() - t0, "instances": int(scene.num_instances),
            "layers": int(scene.num_layers)}


def write_labels_blockwise(path: Path | str, shape, chunk, seed: int = 0, kind: str = "tubes") -> dict[str, Any]:
    """Write only the label stack (K, Z, Y, X) uint16 (chunks (1, *chunk)), the input of the fused oracle."""
    from ppp_dist.geometry import tile
    from ppp_dist.io.volumes import prepare_array, write_box

    t0 = time.perf_counter()
    scene = make_scene(kind, shape, seed)
    arr = prepare_array(str(path), shape=(scene.num_layers,) + tuple(shape), chunks=(1,) + tuple(chunk),
                        dtype="uint16", axes="czyx", kind="labels")
    for spec in tile(shape, chunk):
        _, inst = scene.render(spec.write_box)
        write_box(arr, spec.write_box, inst.astype(np.uint16))
    return {"seconds": time.perf_counter() - t0, "instances": int(scene.num_instances),
            "layers": int(scene.num_layers)}


def fused_available() -> bool:
    """Whether ``run_pipeline`` has the fused oracle mode (a ``labels`` parameter)."""
    from ppp_dist.pipeline.infer import run_pipeline

    return "labels" in inspect.signature(run_pipeline).parameters


@contextlib.contextmanager
def stage_marks(clock):
    """Record (stage, start, end) of every ``run_stage`` / ``agglomerate_instances`` call (``clock()`` times)."""
    import ppp_dist.pipeline.agglomerate as agglomerate
    import ppp_dist.pipeline.runner as runner

    marks: list[tuple[str, float, float]] = []
    orig_stage, orig_agg = runner.run_stage, agglomerate.agglomerate_instances

    def run_stage(client, stage_name, *args, **kwargs):
        t0 = clock()
        try:
            return orig_stage(client, stage_name, *args, **kwargs)
        finally:
            marks.append((stage_name, t0, clock()))

    def agglomerate_instances(*args, **kwargs):
        t0 = clock()
        try:
            return orig_agg(*args, **kwargs)
        finally:
            marks.append(("agglomerate", t0, clock()))

    runner.run_stage, agglomerate.agglomerate_instances = run_stage, agglomerate_instances
    try:
        yield marks
    finally:
        runner.run_stage, agglomerate.agglomerate_instances = orig_stage, orig_agg


def _warm_up(client, cfg, workdir: Path, kind: str, patch, mode: str, seed: int) -> None:
    """Run the pipeline once on a tiny volume (2 blocks per axis) on this cluster, so that imports and the
    loading of numba's compiled kernels in every worker are not charged to the measured run."""
    from ppp_dist.config import config_from_table
    from ppp_dist.pipeline.infer import run_pipeline

    side = 16 if kind not in PLANAR else 32
    shape = spatial(kind, side)
    block = block_of(kind, side // 2, shape)
    src = workdir / f"warm_{mode}_{'x'.join(map(str, patch))}"
    if mode == "fused":
        path = str(src / "gt.zarr" / "gt_instances")
        if not src.exists():
            write_labels_blockwise(path, shape, block, seed, kind)
        source = {"labels": path}
    else:
        path = str(src / "pred.zarr")
        if not src.exists():
            write_oracle_blockwise(path, shape, patch, block, seed, kind)
        source = {"prediction": path}
    table = {"model": {"patch_shape": list(patch)}, "vote": {"block_shape": list(block)},
             "cluster": {"threads_per_worker": cfg.cluster.threads_per_worker}}
    exp = workdir / "warm_exp"
    shutil.rmtree(exp, ignore_errors=True)
    run_pipeline(config_from_table(table), exp, client=client, **source)
    shutil.rmtree(exp, ignore_errors=True)


GRAPH_ROWS = ("clusters", "patch_map", "links", "fragments", "edges")  # rows the vote stage writes


def _db_counts(factory) -> dict[str, Any]:
    """Rows of every graph table (``rows`` = what the vote writes), the patch pairs the vote saw (the rows of
    the uncontracted graph), and the summed block seconds of every stage's ledger (worker-seconds)."""
    store = factory()
    try:
        busy: dict[str, float] = {}
        for row in store.ledger_rows():
            if row.status == "done":
                busy[row.stage] = busy.get(row.stage, 0.0) + float(row.seconds or 0.0)
        tables = store.table_rows()
        vote = store.ledger_summary("vote")["counts"]
        return {**tables, "rows": sum(tables[t] for t in GRAPH_ROWS),
                "uncontracted_rows": int(vote.get("patches", 0) + vote.get("patch_edges", 0)), "busy": busy}
    finally:
        store.close()


def read_voxels(volume, block, halo) -> int:
    """Sum over the blocks of a grid of their read-box voxels (write box + halo, clipped at the volume)."""
    total = 1
    for v, b, h in zip(volume, block, halo):
        total *= sum(min(start + b + h, v) - max(start - h, 0) for start in range(0, v, b))
    return total


def stage_halos(patch) -> dict[str, tuple[int, ...]]:
    """Input halo of the vote and paint stages for the default settings and ``patch``."""
    from ppp_dist.pipeline.settings import AssemblySettings, paint_halo, vote_halo

    settings = AssemblySettings(tuple(patch))
    return {"vote": tuple(vote_halo(settings)), "paint": tuple(paint_halo(settings)),
            "relabel": tuple(paint_halo(settings))}


def run(shape, block, patch, workdir: Path, *, kind: str = "tubes", workers: int = 1, mode: str = "stored",
        seed: int = 0, whole: bool = False, inputs: dict[str, Any] | None = None,
        warm_up: bool = True) -> dict[str, Any]:
    """One pipeline run; returns the measurements (see the module doc). ``inputs``: reuse a written input
    (``{"path": ..., "write": {...}}`` from an earlier call with the same shape/patch/mode). ``warm_up``:
    first run a tiny volume on the same cluster (imports, numba cache loading; not measured)."""
    from distributed import Client, LocalCluster

    from ppp_dist.config import config_from_table
    from ppp_dist.io.stores import StoreFactory
    from ppp_dist.pipeline.infer import run_pipeline

    shape, block, patch = tuple(shape), tuple(block), tuple(patch)
    nvox = math.prod(shape)
    workdir.mkdir(parents=True, exist_ok=True)
    if inputs is None:
        if mode == "fused":
            path = str(workdir / "gt.zarr" / "gt_instances")
            written = write_labels_blockwise(path, shape, block, seed, kind)
        else:
            path = str(workdir / "pred.zarr")
            written = write_oracle_blockwise(path, shape, patch, block, seed, kind)
        inputs = {"path": path, "write": written}
    exp = workdir / f"exp_w{workers}"
    shutil.rmtree(exp, ignore_errors=True)
    cfg = config_from_table({"model": {"patch_shape": list(patch)}, "vote": {"block_shape": list(block)},
                             "cluster": {"threads_per_worker": 1}})
    source = {"labels": inputs["path"]} if mode == "fused" else {"prediction": inputs["path"]}
    t_start = time.perf_counter()
    with LocalCluster(n_workers=workers, threads_per_worker=1, processes=True, dashboard_address=None,
                      silence_logs=50, memory_limit=0) as cluster, Client(cluster) as client:
        client.wait_for_workers(workers)
        t_cluster = time.perf_counter() - t_start
        pids = {f"worker{k}": pid for k, pid in enumerate(sorted(client.run(os.getpid).values()))}
        t0 = time.perf_counter()
        if warm_up:
            _warm_up(client, cfg, workdir, kind, patch, mode, seed)
        t_warm = time.perf_counter() - t0
        idle = {name: _rss(pid) for name, pid in pids.items()}
        sampler = RssSampler({"driver": os.getpid(), **pids})
        sampler.start()
        clock = lambda: time.perf_counter() - sampler.t0  # noqa: E731
        try:
            with stage_marks(clock) as marks:
                t0 = time.perf_counter()
                res = run_pipeline(cfg, exp, client=client, **source)
                wall = time.perf_counter() - t0
        finally:
            sampler.stop()
    stages: dict[str, Any] = {}
    for name, begin, end in marks:
        s = res.stages.get(name, {})
        peaks = sampler.peaks(begin, end)
        secs = float(s.get("seconds", end - begin))
        stages[name] = {"blocks": s.get("blocks"), "seconds": round(secs, 3),
                        "voxels_per_s": round(nvox / secs) if secs > 0 else None,
                        "worker_peak_mib": round(max([v for k, v in peaks.items() if k != "driver"] or [0]), 1),
                        "driver_peak_mib": round(peaks.get("driver", 0.0), 1)}
    allpeaks = sampler.peaks()
    counts = _db_counts(StoreFactory(cfg.database, str(exp)))
    busy = counts.pop("busy")
    for name, halo in stage_halos(patch).items():
        if name in stages:
            stages[name]["halo"] = list(halo)
            stages[name]["read_voxels"] = read_voxels(shape, block, halo)
            stages[name]["worker_s"] = round(busy.get(name, 0.0), 3)
    out = res.output or str(exp / "instances.zarr" / "instances")
    sizes = {"instances": disk_bytes(Path(out)), "graph_db": sum(disk_bytes(p) for p in exp.glob("graph.sqlite*")),
             "vote_for_paint": disk_bytes(exp / "pipeline" / "vote.zarr") + disk_bytes(exp / "pipeline" / "vote_rows")}
    sizes["graph_storage"] = sizes["graph_db"] + sizes["vote_for_paint"]
    if mode == "stored":
        sizes["patches"] = disk_bytes(Path(inputs["path"]) / "patches")
        sizes["numinst"] = disk_bytes(Path(inputs["path"]) / "numinst")
    else:
        sizes["labels"] = disk_bytes(Path(inputs["path"]))
    timeline = [(round(t, 2), round(max([v for k, v in row.items() if k != "driver"] or [0])),
                 round(row.get("driver", 0))) for t, row in sampler.timeline[::10]]
    result = {"kind": kind, "shape": list(shape), "voxels": nvox, "block": list(block), "patch": list(patch),
              "workers": workers, "mode": mode, "seed": seed, "ok": bool(res.ok),
              "instances": res.instances, "write_input_s": round(inputs["write"]["seconds"], 2),
              "cluster_start_s": round(t_cluster, 2), "warm_up_s": round(t_warm, 2),
              "pipeline_s": round(wall, 2),
              "voxels_per_s": round(nvox / wall) if wall > 0 else None,
              "worker_idle_mib": round(max(idle.values()), 1),
              "worker_peak_mib": round(max([v for k, v in allpeaks.items() if k != "driver"] or [0]), 1),
              "driver_peak_mib": round(allpeaks.get("driver", 0.0), 1), "driver_maxrss_mib": round(maxrss_mib(), 1),
              "stages": stages, "db_rows": counts, "bytes": sizes, "timeline": timeline,
              "input": inputs["path"], "output": out}
    if whole and mode == "stored":
        result["whole"] = run_json_subprocess([__file__, "--whole-from", inputs["path"], "--patch",
                                               *map(str, patch), "--compare", out], timeout=1800,
                                              env={**os.environ, "NUMBA_NUM_THREADS": "1"})
    return result


def _rss(pid: int) -> float:
    from bench_common import rss_mib

    return rss_mib(pid)


def whole_volume(group: str, patch, compare: str | None = None) -> dict[str, Any]:
    """``ops.assemble`` on the whole stored prediction in this process: seconds (read + assemble), peak RSS,
    and whether the labels equal ``compare`` (the pipeline's output array) byte for byte."""
    from ppp_dist.io.volumes import open_array
    from ppp_dist.ops.assemble import assemble_with_intermediates

    crop = open_array(f"{group}/patches")  # warm up numba on a small crop (not timed)
    sl = tuple(slice(0, min(16, n)) for n in crop.shape[1:])
    assemble_with_intermediates(np.asarray(crop[(slice(None), *sl)]),
                                np.asarray(open_array(f"{group}/numinst")[(slice(None), *sl)]), tuple(patch))
    base = maxrss_mib()
    t0 = time.perf_counter()
    patches = np.asarray(open_array(f"{group}/patches")[...])
    numinst = np.asarray(open_array(f"{group}/numinst")[...])
    t_read = time.perf_counter() - t0
    r = assemble_with_intermediates(patches, numinst, tuple(patch))
    seconds = time.perf_counter() - t0
    out: dict[str, Any] = {"seconds": round(seconds, 2), "read_s": round(t_read, 2),
                           "steps": {k: round(v, 3) for k, v in r.timings.items()},
                           "peak_mib": round(maxrss_mib(), 1), "start_mib": round(base, 1),
                           "instances": int(r.labels.max()), "voxels": int(np.prod(patches.shape[1:]))}
    if compare:
        other = np.asarray(open_array(compare)[...])
        out["identical"] = bool(other.shape == r.labels.shape and np.array_equal(other, r.labels))
    return out


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--shapes", type=int, nargs="+", default=[128, 256])
    ap.add_argument("--kind", default="tubes", choices=["tubes", "nuclei2d", "worms"])
    ap.add_argument("--block", type=int, default=64)
    ap.add_argument("--patch", type=int, nargs="+", default=[5])
    ap.add_argument("--workers", type=int, nargs="+", default=[1])
    ap.add_argument("--mode", choices=["stored", "fused"], default="stored")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--whole", action="store_true", help="also ops.assemble on the whole volume (stored mode)")
    ap.add_argument("--out", default="runs/bench_pipeline.json")
    ap.add_argument("--whole-from", help=argparse.SUPPRESS)
    ap.add_argument("--compare", help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    if args.whole_from:
        print(json.dumps(whole_volume(args.whole_from, args.patch, args.compare)))
        return
    if args.mode == "fused" and not fused_available():
        raise SystemExit("run_pipeline has no `labels` parameter (fused oracle mode) yet; use --mode stored")
    results = []
    for s in args.shapes:
        shape = spatial(args.kind, s)
        patch = patch_of(args.kind, args.patch[0]) if len(args.patch) == 1 else tuple(args.patch)
        work = Path(tempfile.mkdtemp(prefix=f"bench_pipeline_{s}_", dir=os.environ.get("PPP_DIST_BENCH_TMP")))
        try:
            inputs = None
            for k, w in enumerate(args.workers):
                r = run(shape, block_of(args.kind, args.block, shape), patch, work, kind=args.kind, workers=w,
                        mode=args.mode, seed=args.seed, whole=args.whole and k == 0, inputs=inputs)
                inputs = {"path": r["input"], "write": {"seconds": r["write_input_s"]}}
                r.pop("timeline")
                results.append(r)
                print(json.dumps(r), flush=True)
        finally:
            shutil.rmtree(work, ignore_errors=True)
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(results, indent=1))


if __name__ == "__main__":
    main()
