"""Benchmark of the patch-consensus assembly (ppp_dist.ops) on oracle patches.

Per step seconds and foreground voxels per second, numba threads 1 vs 2, against a straightforward
vectorised NumPy implementation of the same consensus math (ppp_dist.ops._reference; timed on a
deterministic subset of the patches and extrapolated when the full run would take long).

    .venv/bin/python scripts/bench_assembly.py [--out runs/bench_assembly.json] [--quick] [--only flylight]
        [--single-pass] [--repeat 3]

Every run is repeated (``--repeat``, default 3) and the fastest is shown: this machine is shared and
its timings are noisy; the JSON keeps every total. The consensus column is the whole consensus step
(two passes with the default refinement); the ×numpy column compares one numba pass (CPU seconds,
fastest of the repeats) with the one-pass NumPy reference (likewise, where it runs in full).
Every kernel is compiled (or loaded from numba's cache) on a crop before anything is timed.

Prints a markdown table and writes JSON. Timings depend on what else runs on the machine.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import time
from pathlib import Path

import numba
import numpy as np

from ppp_dist.data import synthetic
from ppp_dist.data.flylight import load_flylight
from ppp_dist.ops._reference import consensus_numpy
from ppp_dist.ops.assemble import assemble_with_intermediates
from ppp_dist.ops.consensus import compute_consensus
from ppp_dist.ops.patches import numinst_onehot, numinst_target, patch_targets

STEPS = ("prepare", "consensus", "scores", "selection", "patch_graph", "partition", "paint", "postprocess")


def datasets(quick: bool):
    s = 0.75 if quick else 1.0
    n2 = int(256 * s) // 2 * 2
    n3 = int(64 * s)
    return {
        "tubes 7³": lambda: (synthetic.crossing_tubes_3d((n3,) * 3, seed=0).instances, (7, 7, 7)),
        "nuclei3d 9³": lambda: (synthetic.touching_nuclei_3d((int(48 * s),) * 3, seed=0).instances, (9, 9, 9)),
        "nuclei2d 1×25×25": lambda: (synthetic.touching_nuclei_2d((n2, n2), seed=0).instances, (1, 25, 25)),
        "worms 1×41×41": lambda: (synthetic.crossing_worms_2d((n2, n2), seed=0).instances, (1, 41, 41)),
        "flylight 7³": lambda: (load_flylight().instances, (7, 7, 7)),
    }


def _cpu() -> float:
    return time.process_time()  # user + system of all threads, finer than os.times' 10 ms


def _timed_cpu(f, *args, **kwargs) -> float:
    c0 = _cpu()
    f(*args, **kwargs)
    return _cpu() - c0


def run_one(name, make, numpy_budget_s, refine=True, repeat=3):
    inst, ps = make()
    patches = patch_targets(inst, ps).astype(np.float32)
    prob = numinst_onehot(numinst_target(inst))
    row = {"dataset": name, "shape": list(inst.shape[1:]), "patch_shape": list(ps)}
    for threads in (1, 2):
        numba.set_num_threads(threads)
        # warm up (compile or load every kernel) on a crop large enough to have patch pairs
        crop = (slice(None), slice(0, 20), slice(0, 20), slice(0, 20)) if inst.shape[1] > 1 else \
            (slice(None), slice(None), slice(0, 64), slice(0, 64))
        assemble_with_intermediates(patches[crop], prob[crop], ps)
        runs = []
        for _ in range(repeat):  # the fastest of `repeat` runs; all totals are kept in the JSON
            c0, t0 = _cpu(), time.perf_counter()
            r = assemble_with_intermediates(patches, prob, ps, refine_consensus=refine)
            total, cpu = time.perf_counter() - t0, _cpu() - c0
            runs.append({k: r.timings[k] for k in STEPS} | {"total": total, "cpu": cpu})
        row[f"t{threads}"] = min(runs, key=lambda t: t["total"]) | {"totals": [t["total"] for t in runs]}
        if threads == 1:  # CPU seconds of one consensus pass alone (what the NumPy reference computes)
            row["consensus_cpu"] = min(_timed_cpu(compute_consensus, r.field, refine=False) for _ in range(repeat))
    nfg = int((r.numinst > 0).sum())
    row.update(n_fg=nfg, n_members=int(r.field.n_members), n_selected=int(len(r.selected)),
               n_edges=int(len(r.graph.pairs)), n_labels=int(r.labels.max()), bytes=r.nbytes)
    # numpy reference of the consensus, on a deterministic subset of voters if needed
    nv = len(r.field.voter_coords)
    sub = np.arange(0, nv, max(1, nv // 200))
    t0 = _cpu()
    consensus_numpy(r.field, voters=sub)
    per_voter = (_cpu() - t0) / len(sub)
    if per_voter * nv * repeat < numpy_budget_s:  # best of `repeat`, as the numba pass
        row["numpy_consensus"] = min(_timed_cpu(consensus_numpy, r.field) for _ in range(repeat))
        row["numpy_extrapolated"] = False
    else:
        row["numpy_consensus"] = per_voter * nv
        row["numpy_extrapolated"] = True
    numba.set_num_threads(1)
    return row


def table(rows):
    out = ["| dataset | shape | fg vox | sel | edges | " + " | ".join(STEPS[1:6]) + " | total 1 thread (wall) "
           "| CPU s 1 thread | fg vox/CPU s | total 2 threads (wall) | wall 1→2 | numpy consensus CPU s "
           "| consensus ×numpy (CPU, one pass) |",
           "|" + "---|" * 17]
    for r in rows:
        t1, t2 = r["t1"], r["t2"]
        steps = " | ".join(f"{t1[k]:.2f}" for k in STEPS[1:6])
        npc = f"{r['numpy_consensus']:.1f}{'*' if r['numpy_extrapolated'] else ''}"
        out.append(f"| {r['dataset']} | {'×'.join(map(str, r['shape']))} | {r['n_fg']} | {r['n_selected']} | "
                   f"{r['n_edges']} | {steps} | {t1['total']:.2f} | {t1['cpu']:.2f} | {r['n_fg'] / t1['cpu']:.0f} | "
                   f"{t2['total']:.2f} | {t1['total'] / t2['total']:.2f} | {npc} | "
                   f"{r['numpy_consensus'] / r['consensus_cpu']:.0f} |")
    return "\n".join(out)


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", default="runs/bench_assembly.json")
    ap.add_argument("--quick", action="store_true", help="smaller synthetic volumes")
    ap.add_argument("--numpy-budget", type=float, default=60.0,
                    help="run the NumPy reference in full when it should take less than this many seconds")
    ap.add_argument("--only", nargs="*", help="dataset names (prefix match)")
    ap.add_argument("--repeat", type=int, default=3,
                    help="runs per dataset and thread count; the table shows the fastest (JSON: all totals)")
    ap.add_argument("--single-pass", action="store_true",
                    help="consensus without the refinement pass (refine_consensus=False), for comparison")
    args = ap.parse_args()
    rows = []
    for name, make in datasets(args.quick).items():
        if args.only and not any(name.startswith(o) for o in args.only):
            continue
        rows.append(run_one(name, make, args.numpy_budget, refine=not args.single_pass, repeat=args.repeat))
        print(f"done {name}", flush=True)
    md = table(rows)
    print(md)
    print(f"(seconds, fastest of {args.repeat} runs; steps: wall at 1 thread; * = NumPy time extrapolated from a "
          "subset of the patches; "
          f"load average at the end {os.getloadavg()[0]:.1f} on {os.cpu_count()} CPUs)")
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    meta = {"cpu_count": os.cpu_count(), "platform": platform.platform(), "numba": numba.__version__,
            "numpy": np.__version__}
    out.write_text(json.dumps({"meta": meta, "rows": rows}, indent=1))
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
