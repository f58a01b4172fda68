"""The benchmark suite: every ppp_dist benchmark in one run, side by side, with tables, plots and a 1 TB model.

    nice -n 5 .venv/bin/python scripts/bench_suite.py [--postgres DSN | --start-postgres] [--budget-min 20]
    .venv/bin/python scripts/bench_suite.py --smoke          # tiny sizes, seconds: checks that everything runs

Writes ``runs/bench_suite/<UTC time stamp>/`` (``--out`` changes the parent): ``results.json`` (every number),
``results.md`` (the markdown tables, also printed), ``*.png`` plots (matplotlib, Agg). Sections, in the order
they run (the pipeline last, so that its optional large sizes can use whatever the time budget has left):

a. ``assembly``: ``scripts/bench_assembly.py --quick --repeat 2`` (per step seconds and patch shape, numba vs NumPy).
d. ``graph_db``: ``write_block`` / ``iter_edges`` / ``write_lut`` rows/s, SQLite vs PostgreSQL.
c. ``agglomeration``: our union-find vs networkx vs scipy.sparse.csgraph at 1e6, 1e7, 1e8 edges.
e. ``bytes``: bytes per voxel of every stored intermediate vs the original's 686 B/voxel (float16 7^3 patches).
b. ``pipeline``: vote -> agglomerate -> paint on synthetic volumes (oracle patches), seconds / voxels/s /
   peak RSS per stage, 1 vs 2 workers, distributed vs whole-volume ``ops.assemble``, stored vs fused oracle.
n. ``network``: the network's output voxels/s (scripts/bench_network.py), the predict term of the model.
f. ``model``: the time of a 1 TB volume on N = 1, 10, 100 workers from the measured per-stage rates.

Sizes that do not fit the budget (``--budget-min``, default 20 minutes) are extrapolated from the largest
measured size with the same settings, and listed as such in the output. Timings depend on the load of the
machine (recorded at the start and end); compare numbers of one run with each other, not across runs.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import shutil
import subprocess
import sys
import tempfile
import time
import traceback
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

from bench_common import ROOT, disk_bytes, machine, stamp  # noqa: E402
from bench_model import section_model  # noqa: E402
from bench_report import ORIGINAL_BPV, plots, render  # noqa: E402

SCRIPTS = Path(__file__).resolve().parent

# --- plans ------------------------------------------------------------------------------------------------------

FULL: dict[str, Any] = {
    "assembly": {"args": ["--quick", "--repeat", "2"], "timeout": 420},  # fastest of 2 runs per dataset
    "network": {"config": "configs/default.toml", "threads": [1, 2], "repeat": 2, "timeout": 600},
    "graph_db": {"blocks": 24, "rows": 10_000, "writers": 4},
    "bytes": {"size": 64, "patch": 5},
    "agglomeration": {"sizes": [1e5, 1e6, 1e7, 1e8], "methods": ["union_find", "scipy", "networkx"],
                      "extrapolate": {"networkx": 1e7, "scipy": 1e8}, "optional": {"union_find": 1e8},
                      "timeout": 600},
    # pipeline runs in order; "optional" ones wait until every required part of the suite has run, then run
    # in the order of OPTIONAL if their projection fits the remaining budget, otherwise they are extrapolated
    # from the largest measured run named in "from" (same kind and patch; the same worker count preferred)
    "pipeline": [
        {"name": "tubes 64³ stored", "kind": "tubes", "size": 64, "block": 64, "patch": 5, "mode": "stored",
         "workers": [1], "whole": True},
        {"name": "tubes 64³ fused", "kind": "tubes", "size": 64, "block": 64, "patch": 5, "mode": "fused",
         "workers": [1]},
        {"name": "tubes 128³ stored", "kind": "tubes", "size": 128, "block": 64, "patch": 5, "mode": "stored",
         "workers": [1], "whole": True},
        {"name": "tubes 128³ fused", "kind": "tubes", "size": 128, "block": 64, "patch": 5, "mode": "fused",
         "workers": [1, 2]},
        {"name": "nuclei2d 1024² fused", "kind": "nuclei2d", "size": 1024, "block": 512, "patch": 11,
         "mode": "fused", "workers": [2]},
        {"name": "tubes 256³ fused", "kind": "tubes", "size": 256, "block": 64, "patch": 5, "mode": "fused",
         "workers": [2], "optional": True, "from": ["tubes 128³ fused"]},
        {"name": "nuclei2d 2048² fused", "kind": "nuclei2d", "size": 2048, "block": 512, "patch": 11,
         "mode": "fused", "workers": [2], "optional": True, "from": ["nuclei2d 1024² fused"]},
        {"name": "tubes 512³ fused", "kind": "tubes", "size": 512, "block": 64, "patch": 5, "mode": "fused",
         "workers": [2], "optional": True, "from": ["tubes 256³ fused", "tubes 128³ fused"]},
        {"name": "nuclei2d 4096² fused", "kind": "nuclei2d", "size": 4096, "block": 512, "patch": 11,
         "mode": "fused", "workers": [2], "optional": True,
         "from": ["nuclei2d 2048² fused", "nuclei2d 1024² fused"]},
        # a gigavoxel: 128³ blocks (the vote halo reads 2.4 voxels per voxel instead of 4.8 at 64³; a worker
        # peaks at ~1.1 GiB); ~40 min on 2 cores, so it runs only with a larger --budget-min
        {"name": "tubes 1024³ fused", "kind": "tubes", "size": 1024, "block": 128, "patch": 5, "mode": "fused",
         "workers": [2], "optional": True, "from": ["tubes 512³ fused", "tubes 256³ fused", "tubes 128³ fused"]},
    ],
    # priority of the optional parts
    "optional": [("pipeline", "tubes 256³ fused"), ("agglomeration", "union_find"),
                 ("pipeline", "nuclei2d 2048² fused"), ("pipeline", "tubes 512³ fused"),
                 ("pipeline", "nuclei2d 4096² fused"), ("pipeline", "tubes 1024³ fused")],
}

SMOKE: dict[str, Any] = {
    "assembly": {"args": ["--quick", "--only", "tubes", "--numpy-budget", "1", "--repeat", "1"], "timeout": 300},
    "network": {"config": "ppp_dist/data/sample/model/config.toml", "threads": [1], "repeat": 1, "timeout": 300},
    "graph_db": {"blocks": 4, "rows": 200, "writers": 2},
    "bytes": {"size": 16, "patch": 5},
    "agglomeration": {"sizes": [1e4, 1e5], "methods": ["union_find", "scipy", "networkx"],
                      "extrapolate": {"networkx": 1e5}, "optional": {"union_find": 1e5}, "timeout": 120},
    "pipeline": [
        {"name": "tubes 24³ stored", "kind": "tubes", "size": 24, "block": 12, "patch": 5, "mode": "stored",
         "workers": [1], "whole": True, "warm_up": False},
        {"name": "tubes 24³ fused", "kind": "tubes", "size": 24, "block": 12, "patch": 5, "mode": "fused",
         "workers": [1], "warm_up": False},
        {"name": "tubes 48³ fused", "kind": "tubes", "size": 48, "block": 12, "patch": 5, "mode": "fused",
         "workers": [1], "optional": True, "from": ["tubes 24³ fused"], "force_extrapolate": True},
    ],
    "optional": [("agglomeration", "union_find"), ("pipeline", "tubes 48³ fused")],
}


class Budget:
    """Wall-clock budget of the whole suite."""

    def __init__(self, minutes: float) -> None:
        self.total = minutes * 60.0
        self.t0 = time.perf_counter()

    def elapsed(self) -> float:
        return time.perf_counter() - self.t0

    def left(self) -> float:
        return self.total - self.elapsed()


# --- a. assembly ------------------------------------------------------------------------------------------------

def section_assembly(plan: dict[str, Any], out: Path, ctx: dict[str, Any]) -> dict[str, Any]:
    """``bench_assembly.py`` as a subprocess (owned elsewhere; not edited): its table and JSON rows."""
    path = out / "bench_assembly.json"
    cmd = [sys.executable, str(SCRIPTS / "bench_assembly.py"), *plan["args"], "--out", str(path)]
    t0 = time.perf_counter()
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=plan["timeout"], cwd=ROOT)
    if proc.returncode != 0:
        tail = proc.stderr.strip().splitlines()[-1:] or [""]
        raise RuntimeError(f"bench_assembly.py exit code {proc.returncode}: {tail[0]}")
    lines = proc.stdout.splitlines()
    table = "\n".join(ln for ln in lines if ln.startswith("|"))
    notes = [ln for ln in lines if ln.startswith("(")]
    data = json.loads(path.read_text())
    return {"command": " ".join(["scripts/bench_assembly.py", *plan["args"]]),
            "seconds": round(time.perf_counter() - t0, 1), "table": table, "notes": notes, "rows": data["rows"]}


# --- d. graph DB ------------------------------------------------------------------------------------------------

def section_graph_db(plan: dict[str, Any], out: Path, ctx: dict[str, Any]) -> dict[str, Any]:
    import bench_graph_db

    dsn = ctx.get("dsn") or ""
    if not dsn:
        ctx["skipped"].append("graph DB: PostgreSQL not measured (no --postgres DSN, no "
                              "PPP_DIST_TEST_POSTGRES_DSN, no --start-postgres)")
    t0 = time.perf_counter()
    results = bench_graph_db.run(("sqlite", "postgres"), plan["blocks"], plan["rows"], plan["writers"], dsn)
    return {"blocks": plan["blocks"], "rows_per_block": plan["rows"], "writers": plan["writers"],
            "backends": results, "table": bench_graph_db.table(results),
            "seconds": round(time.perf_counter() - t0, 1)}


# --- c. agglomeration -------------------------------------------------------------------------------------------

REASONS = {"networkx": "a Python object per node and edge: ~0.4 KB per edge, ~100 k edges/s",
           "scipy": "the whole edge list, its sorted copy and a CSR matrix in memory at once",
           "union_find": "time budget"}


def _note_agglomeration(rows: list[dict[str, Any]], ctx: dict[str, Any]) -> None:
    for r in rows:
        if r.get("extrapolated"):
            why = r.get("error") or r.get("why") or REASONS.get(r["method"], "")
            ctx["skipped"].append(
                f"agglomeration: {r['method']} at {r['edges']:.0e} edges not run to the end ({why}); "
                f"extrapolated linearly from {r.get('from_edges', 0):.0e} edges")
        elif r.get("error"):
            ctx["skipped"].append(f"agglomeration: {r['method']} at {r['edges']:.0e} edges: {r['error']}")


def section_agglomeration(plan: dict[str, Any], out: Path, ctx: dict[str, Any]) -> dict[str, Any]:
    """Every (size, method) except the optional ones (run later if the budget allows: the plan's "optional" list)."""
    import bench_agglomerate

    t0 = time.perf_counter()
    optional = plan.get("optional", {})
    rows: list[dict[str, Any]] = []
    for size in sorted(plan["sizes"]):
        methods = [m for m in plan["methods"] if optional.get(m) != size]
        print(f"  agglomeration: {size:.0e} edges: {', '.join(methods)} ... "
              f"({ctx['budget'].elapsed() / 60:.1f} min)", flush=True)
        rows += bench_agglomerate.run_matrix([size], methods, plan["timeout"], plan["extrapolate"], prior=rows)
    _note_agglomeration(rows, ctx)
    return {"rows": rows, "table": bench_agglomerate.table(rows), "seconds": round(time.perf_counter() - t0, 1)}


# --- e. bytes per voxel (extra measurements; the pipeline's outputs are added in ``bytes_table``) -----------------

def section_bytes(plan: dict[str, Any], out: Path, ctx: dict[str, Any]) -> dict[str, Any]:
    """Compressed sizes of raw (float32/uint8) and of oracle patches as uint8/float16, binary and soft-noisy."""
    import bench_pipeline as bp

    from ppp_dist.data.writer import write_synthetic_volume

    size, p = plan["size"], plan["patch"]
    shape, patch = (size,) * 3, (p,) * 3
    nvox = size ** 3
    rows = []
    work = Path(tempfile.mkdtemp(prefix="bench_bytes_", dir=ctx["tmp"]))
    try:
        for dtype in ("float32", "uint8"):
            info = write_synthetic_volume(work / f"raw_{dtype}.zarr", "tubes", shape, shape, seed=0, raw_dtype=dtype)
            rows.append({"what": f"raw, {info.num_channels} channels {dtype} (synthetic tubes)",
                         "nominal": info.num_channels * (4 if dtype == "float32" else 1),
                         "stored": disk_bytes(work / f"raw_{dtype}.zarr" / "raw") / nvox})
            if dtype == "uint8":
                rows.append({"what": f"ground truth labels, {info.num_layers} channels uint16",
                             "nominal": 2 * info.num_layers,
                             "stored": disk_bytes(work / f"raw_{dtype}.zarr" / "labels") / nvox})
        for dtype in ("uint8", "float16"):
            for noise in (0.0, 0.1):
                g = work / f"pred_{dtype}_{noise}.zarr"
                bp.write_oracle_blockwise(g, shape, patch, shape, seed=0, kind="tubes", dtype=dtype, noise=noise)
                label = "oracle 0/1" if noise == 0 else "soft 0.2/0.8 ± 0.1 noise"
                item = 1 if dtype == "uint8" else 2
                rows.append({"what": f"prediction patches {p}³ {dtype}, {label}", "nominal": item * p ** 3,
                             "stored": disk_bytes(g / "patches") / nvox})
                rows.append({"what": f"numinst 3 × {dtype}, {label}", "nominal": 3 * item,
                             "stored": disk_bytes(g / "numinst") / nvox})
    finally:
        shutil.rmtree(work, ignore_errors=True)
    return {"volume": list(shape), "rows": rows}


def bytes_table(results: dict[str, Any]) -> list[dict[str, Any]]:
    """Every stored intermediate: nominal and measured (compressed) bytes per voxel, and the ratio to 686."""
    rows: list[dict[str, Any]] = [
        {"what": "original PatchPerPix: patches 7³ float16 (pred_affs)", "nominal": 686.0, "stored": None,
         "source": "ppp_reference.md §2"},
        {"what": "original PatchPerPix: numinst 3 × float16", "nominal": 6.0, "stored": None,
         "source": "ppp_reference.md §2"},
        {"what": "ours: patches 7³ uint8 (default patch_dtype)", "nominal": 343.0, "stored": None,
         "source": "nominal"},
        {"what": "ours: patches 7³ float16", "nominal": 686.0, "stored": None, "source": "nominal"},
        {"what": "ppp+dec codes: 176 × float16", "nominal": 352.0,
         "stored": None, "source": "nominal (needs a trained network)"},
        {"what": "fused mode (store_patches = false): patches", "nominal": 0.0, "stored": 0.0, "source": "nominal"},
    ]
    extra = results.get("bytes") or {}
    for r in extra.get("rows", []):
        rows.append({**r, "source": f"measured, {'×'.join(map(str, extra['volume']))}"})
    runs = [r for r in results.get("pipeline", {}).get("runs", []) if not r.get("extrapolated") and not r.get("error")]
    picks = []
    stored = [r for r in runs if r.get("mode") == "stored" and r["kind"] == "tubes"]
    if stored:
        picks.append((max(stored, key=lambda r: r["voxels"]), True))
    for kind in dict.fromkeys(r["kind"] for r in runs):
        big = max((r for r in runs if r["kind"] == kind), key=lambda r: (r["voxels"], r["mode"] == "fused"))
        if not any(big is p for p, _ in picks):
            picks.append((big, False))
    for run, _ in picks:
        v, b, src = run["voxels"], run["bytes"], f"measured, {run['name']}"
        dim = "³" if run["patch"][0] > 1 else "²"
        if "patches" in b:
            rows.append({"what": f"prediction patches {run['patch'][-1]}{dim} uint8 (oracle, read by the pipeline)",
                         "nominal": float(math.prod(run["patch"])), "stored": b["patches"] / v, "source": src})
            rows.append({"what": "numinst 3 × uint8 (oracle)", "nominal": 3.0, "stored": b["numinst"] / v,
                         "source": src})
        if "labels" in b:
            rows.append({"what": "label stack uint16 (input of the fused oracle)", "nominal": None,
                         "stored": b["labels"] / v, "source": src})
        rows.append({"what": "instances 2 × uint32 (OME-Zarr labels)", "nominal": 8.0,
                     "stored": b["instances"] / v, "source": src})
        rows.append({"what": "graph DB, SQLite file (contracted graph, instances, ledger)", "nominal": None,
                     "stored": b["graph_db"] / v, "source": src,
                     "rows_per_mvoxel": round(1e6 * run["db_rows"]["rows"] / v, 1),
                     "uncontracted_rows_per_mvoxel": round(1e6 * run["db_rows"]["uncontracted_rows"] / v, 1)})
        rows.append({"what": "vote's files for paint (cluster map, numinst, selected patches)", "nominal": None,
                     "stored": b["vote_for_paint"] / v, "source": src})
    for r in rows:
        ref = r["stored"] if r["stored"] is not None else r["nominal"]
        r["fraction_of_686"] = None if ref is None else ref / ORIGINAL_BPV
    return rows


# --- b. pipeline ------------------------------------------------------------------------------------------------

def _project(base: dict[str, Any], spec: dict[str, Any]) -> dict[str, Any]:
    """A pipeline run of ``spec`` extrapolated from the measured ``base`` (same kind/patch/mode/workers).

    vote and paint: seconds x (read voxels of the target grid / read voxels of the base grid) (compute-bound
    per block, halos included exactly); agglomerate, DB rows, input writing: x voxels; worker peak RSS: the
    base's (one block per worker); driver peak: the base's (the driver holds no per-cluster data)."""
    import bench_pipeline as bp

    shape = bp.spatial(spec["kind"], spec["size"])
    block = bp.block_of(spec["kind"], spec["block"], shape)
    nvox = math.prod(shape)
    f = nvox / base["voxels"]
    stages = {}
    for name, s in base["stages"].items():
        st = dict(s)
        if "halo" in s:
            g = bp.read_voxels(shape, block, s["halo"]) / s["read_voxels"]
            st["read_voxels"] = bp.read_voxels(shape, block, s["halo"])
        else:
            g = f
        st["seconds"] = round(s["seconds"] * g, 2)
        if "worker_s" in s:
            st["worker_s"] = round(s["worker_s"] * g, 2)
        st["voxels_per_s"] = round(nvox / st["seconds"]) if st["seconds"] else None
        st["blocks"] = math.prod(-(-a // b) for a, b in zip(shape, block)) if s.get("blocks", 1) > 1 else 1
        stages[name] = st
    total = sum(s["seconds"] for s in stages.values())
    driver = base["driver_peak_mib"]
    return {"name": spec["name"], "kind": spec["kind"], "shape": list(shape), "voxels": nvox, "block": list(block),
            "patch": base["patch"], "workers": base["workers"], "mode": base["mode"], "extrapolated": True,
            "from": base["name"], "instances": None, "write_input_s": round(base["write_input_s"] * f, 1),
            "pipeline_s": round(total, 1), "voxels_per_s": round(nvox / total) if total else None,
            "worker_peak_mib": base["worker_peak_mib"], "driver_peak_mib": round(driver, 1), "stages": stages,
            "db_rows": {k: round(v * f) for k, v in base["db_rows"].items() if isinstance(v, (int, float))}}


def _pipeline_spec(spec: dict[str, Any], runs: list[dict[str, Any]], ctx: dict[str, Any]) -> None:
    """Run one pipeline spec (all its worker counts) and append the results (or errors) to ``runs``."""
    import bench_pipeline as bp

    budget: Budget = ctx["budget"]
    mode = spec["mode"]
    if mode == "fused" and not ctx["fused_ok"]:
        mode = "stored"
    shape = bp.spatial(spec["kind"], spec["size"])
    block = bp.block_of(spec["kind"], spec["block"], shape)
    patch = bp.patch_of(spec["kind"], spec["patch"])
    work = Path(tempfile.mkdtemp(prefix="bench_pipe_", dir=ctx["tmp"]))
    try:
        inputs = None
        for k, w in enumerate(spec["workers"]):
            print(f"  pipeline: {spec['name']}, {w} worker(s) ... ({budget.elapsed() / 60:.1f} min)", flush=True)
            try:
                r = bp.run(shape, block, patch, work, kind=spec["kind"], workers=w, mode=mode,
                           whole=bool(spec.get("whole")) and k == 0, inputs=inputs,
                           warm_up=spec.get("warm_up", True))
            except Exception as err:  # noqa: BLE001 - one failed run must not stop the suite
                msg = f"{type(err).__name__}: {str(err).splitlines()[0][:300]}"
                runs.append({"name": spec["name"], "workers": w, "error": msg})
                ctx["skipped"].append(f"pipeline: {spec['name']} with {w} worker(s) failed: {msg}")
                continue
            inputs = {"path": r["input"], "write": {"seconds": r["write_input_s"]}}
            ctx["timelines"][f"{spec['name']}, {w} worker(s)"] = {"timeline": r.pop("timeline"),
                                                                  "stages": r["stages"]}
            r["name"] = spec["name"] if mode == spec["mode"] else spec["name"].replace(spec["mode"], mode)
            r["extrapolated"] = False
            runs.append(r)
            if r.get("whole", {}).get("error"):
                ctx["skipped"].append(f"pipeline: whole-volume ops.assemble of {spec['name']}: {r['whole']['error']}")
    finally:
        shutil.rmtree(work, ignore_errors=True)


def section_pipeline(plan: list[dict[str, Any]], out: Path, ctx: dict[str, Any]) -> dict[str, Any]:
    """The required pipeline runs (the optional ones run later, see :func:`optional_pipeline`)."""
    import bench_pipeline as bp

    ctx["fused_ok"] = bp.fused_available()
    if not ctx["fused_ok"]:
        ctx["skipped"].append("pipeline: run_pipeline has no fused oracle mode (labels=): fused runs use the stored "
                              "oracle; sizes whose stored oracle would exceed 4 GB are extrapolated")
    runs: list[dict[str, Any]] = []
    for spec in plan:
        if not spec.get("optional"):
            _pipeline_spec(spec, runs, ctx)
    return {"runs": runs, "fused_available": ctx["fused_ok"]}


def optional_pipeline(spec: dict[str, Any], results: dict[str, Any], ctx: dict[str, Any]) -> None:
    """Run ``spec`` if its projection (from its base run) fits the budget, else add the extrapolated row."""
    import bench_pipeline as bp

    runs = results.setdefault("pipeline", {"runs": []}).setdefault("runs", [])
    budget: Budget = ctx["budget"]
    measured = [r for r in runs if r.get("name") in spec["from"] and not r.get("error")
                and not r.get("extrapolated")]
    if not measured:
        ctx["skipped"].append(f"pipeline: {spec['name']}: skipped (no measured base run among {spec['from']})")
        return
    want = spec["workers"][0]
    base = max(measured, key=lambda r: (r["workers"] == want, r["voxels"], r["workers"]))
    proj = _project(base, spec)
    need = 1.3 * (proj["pipeline_s"] + proj["write_input_s"]) + 15 * len(spec["workers"])
    huge = (not ctx.get("fused_ok") and spec["size"] ** (2 if spec["kind"] in bp.PLANAR else 3)
            * spec["patch"] ** (2 if spec["kind"] in bp.PLANAR else 3) > 4e9)
    left = budget.left() - ctx["reserve_s"]
    if spec.get("force_extrapolate") or huge or need > left:
        why = ("smoke mode exercises the extrapolation" if spec.get("force_extrapolate") else
               "no fused mode and the stored oracle would exceed 4 GB" if huge else
               f"projected {need / 60:.1f} min > {max(0.0, left) / 60:.1f} min left in the budget")
        proj["why"] = why
        runs.append(proj)
        ctx["skipped"].append(f"pipeline: {spec['name']} not run, extrapolated from {base['name']} with "
                              f"{base['workers']} worker(s) ({why})")
        return
    _pipeline_spec(spec, runs, ctx)


def optional_agglomeration(method: str, plan: dict[str, Any], results: dict[str, Any], ctx: dict[str, Any]) -> None:
    """``method`` at its optional size if the projected process time (linear in the edges from the largest
    measured size, x 1.2) fits the budget; otherwise, or on a time-out, the extrapolated row."""
    import bench_agglomerate

    sec = results.get("agglomeration") or {}
    if "rows" not in sec:
        return
    rows = sec["rows"]
    size = int(plan["optional"][method])
    budget: Budget = ctx["budget"]
    proj = bench_agglomerate._extrapolated(rows, method, size)
    need = 1.2 * (proj.get("process_s") or proj.get("seconds") or 0.0) + 5
    left = budget.left() - ctx["reserve_s"]
    if proj.get("seconds") is not None and need <= left:
        timeout = min(float(plan["timeout"]), max(30.0, left))
        print(f"  agglomeration: {method} at {size:.0e} edges (projected {need:.0f} s, time-out {timeout:.0f} s) "
              f"... ({budget.elapsed() / 60:.1f} min)", flush=True)
        new = bench_agglomerate.run_matrix([size], [method], timeout, prior=rows)
    else:
        proj["why"] = f"projected {need / 60:.1f} min > {max(0.0, left) / 60:.1f} min left in the budget"
        new = [proj]
    rows[:] = [r for r in rows if not (r["method"] == method and r["edges"] == size)] + new
    rows.sort(key=lambda r: (r["edges"], plan["methods"].index(r["method"])))
    _note_agglomeration(new, ctx)
    sec["table"] = bench_agglomerate.table(rows)


# --- PostgreSQL -------------------------------------------------------------------------------------------------

def start_postgres() -> tuple[str, str | None]:
    """Run ``scripts/start_postgres.sh``; return (DSN, version to stop afterwards or None if it was running)."""
    versions = sorted(os.listdir("/etc/postgresql"), key=lambda v: [int(x) for x in v.split(".") if x.isdigit()])
    version = versions[-1]
    status = subprocess.run(["pg_ctlcluster", version, "main", "status"], capture_output=True, text=True)
    was_running = status.returncode == 0
    dsn = subprocess.run(["bash", str(SCRIPTS / "start_postgres.sh")], capture_output=True, text=True,
                         check=True).stdout.strip().splitlines()[-1]
    return dsn, (None if was_running else version)


# --- main -------------------------------------------------------------------------------------------------------

SECTIONS = ("assembly", "network", "graph_db", "bytes", "agglomeration", "pipeline")


def section_network(plan: dict[str, Any], out: Path, ctx: dict[str, Any]) -> dict[str, Any]:
    """The network's output voxels/s on this machine (scripts/bench_network.py, in its own process)."""
    from bench_common import run_json_subprocess

    args = [str(SCRIPTS / "bench_network.py"), "--config", str(ROOT / plan["config"]), "--threads",
            *map(str, plan["threads"]), "--repeat", str(plan["repeat"])]
    result = run_json_subprocess(args, timeout=plan["timeout"])
    if result.get("error"):
        ctx["skipped"].append(f"network: {result['error']}")
    return result


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--smoke", action="store_true", help="tiny sizes (seconds): check that every section runs")
    ap.add_argument("--out", default="runs/bench_suite", help="parent folder of the time-stamped run folder")
    ap.add_argument("--budget-min", type=float, default=None,
                    help="wall-clock budget; optional large pipeline sizes are extrapolated when they would not "
                         "fit (default 20, smoke 3)")
    ap.add_argument("--postgres", default=os.environ.get("PPP_DIST_TEST_POSTGRES_DSN", ""),
                    help="PostgreSQL DSN for the graph DB section (default $PPP_DIST_TEST_POSTGRES_DSN)")
    ap.add_argument("--start-postgres", action="store_true",
                    help="start the machine's PostgreSQL with scripts/start_postgres.sh (root) and stop it "
                         "afterwards if it was not running")
    ap.add_argument("--only", nargs="+", choices=SECTIONS, help="run only these sections")
    ap.add_argument("--io-gbps", type=float, default=None, help="I/O bandwidth for the 1 TB model (default: ignored)")
    args = ap.parse_args(argv)
    plan = SMOKE if args.smoke else FULL
    budget = Budget(args.budget_min if args.budget_min is not None else (3 if args.smoke else 20))
    out = Path(args.out) / stamp()
    out.mkdir(parents=True, exist_ok=False)
    tmp = Path(tempfile.mkdtemp(prefix="bench_suite_", dir=os.environ.get("PPP_DIST_BENCH_TMP")))
    stop_pg = None
    dsn = args.postgres
    skipped: list[str] = []
    if args.start_postgres and not dsn:
        try:
            dsn, stop_pg = start_postgres()
        except Exception as err:  # noqa: BLE001
            skipped.append(f"graph DB: could not start PostgreSQL: {err}")
    results: dict[str, Any] = {"meta": {"stamp": out.name, "mode": "smoke" if args.smoke else "full",
                                        "budget_min": budget.total / 60, "machine": machine(),
                                        "argv": sys.argv[1:] if argv is None else argv, "out": str(out)},
                               "skipped": skipped}
    ctx = {"budget": budget, "tmp": tmp, "skipped": skipped, "dsn": dsn, "reserve_s": 15.0, "timelines": {}}
    fns = {"assembly": section_assembly, "network": section_network, "graph_db": section_graph_db,
           "agglomeration": section_agglomeration, "bytes": section_bytes, "pipeline": section_pipeline}
    try:
        for name in SECTIONS:
            if args.only and name not in args.only:
                continue
            print(f"[{budget.elapsed() / 60:5.1f} min] {name} ...", flush=True)
            t0 = time.perf_counter()
            try:
                results[name] = fns[name](plan[name], out, ctx)
            except Exception as err:  # noqa: BLE001 - report and go on with the other sections
                results[name] = {"error": f"{type(err).__name__}: {err}"}
                skipped.append(f"{name}: failed: {type(err).__name__}: {str(err).splitlines()[0][:300]}")
                traceback.print_exc()
            results[name + "_seconds"] = round(time.perf_counter() - t0, 1)
        ctx["timelines"] = ctx.get("timelines", {})
        for section, key in plan.get("optional", []):
            if args.only and section not in args.only:
                continue
            try:
                if section == "pipeline":
                    spec = next(s for s in plan["pipeline"] if s["name"] == key)
                    optional_pipeline(spec, results, ctx)
                else:
                    optional_agglomeration(key, plan["agglomeration"], results, ctx)
            except Exception as err:  # noqa: BLE001
                skipped.append(f"{section} {key}: failed: {type(err).__name__}: {str(err).splitlines()[0][:300]}")
                traceback.print_exc()
    finally:
        (out / "pipeline_timelines.json").write_text(json.dumps(ctx.get("timelines", {})))
        shutil.rmtree(tmp, ignore_errors=True)
        if stop_pg:
            subprocess.run(["pg_ctlcluster", stop_pg, "main", "stop"], check=False)
            skipped.append(f"graph DB: PostgreSQL {stop_pg} was started for the suite and stopped afterwards")
    results["bytes_per_voxel"] = bytes_table(results)
    results["model"] = section_model(results, args.io_gbps)
    results["meta"]["wall_s"] = round(budget.elapsed(), 1)
    results["meta"]["load_end"] = [round(x, 2) for x in os.getloadavg()]
    try:
        results["plots"] = plots(results, out)
    except Exception as err:  # noqa: BLE001
        results["plots"] = []
        skipped.append(f"plots failed: {type(err).__name__}: {err}")
    md = render(results)
    (out / "results.md").write_text(md)
    (out / "results.json").write_text(json.dumps(results, indent=1, default=str))
    print(md)
    if results.get("model", {}).get("rows"):
        print("1 TB model (hours):", ", ".join(f"N={r['workers']}: {r['total_h']:.1f}"
                                               for r in results["model"]["rows"]))
    print(f"wrote {out}/results.json, results.md, {', '.join(results['plots'])} "
          f"in {results['meta']['wall_s'] / 60:.1f} min")
    return 0


if __name__ == "__main__":
    sys.exit(main())
