"""Tables and plots of scripts/bench_suite.py: ``render(results)`` -> markdown, ``plots(results, out)`` -> PNGs.

Pure functions of the ``results.json`` dictionary the suite writes, so a finished run can be re-rendered::

    .venv/bin/python -c "import json, sys; sys.path.insert(0, 'scripts'); import bench_report as r; \
        print(r.render(json.load(open('runs/bench_suite/<time>/results.json'))))"
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from bench_common import fmt, md_table

ORIGINAL_BPV = 686.0  # the original stores 343 float16 patch values per voxel (ppp_reference.md §2)


def _stage(run: dict[str, Any], name: str, key: str) -> Any:
    return run.get("stages", {}).get(name, {}).get(key)


def render(results: dict[str, Any]) -> str:
    meta = results["meta"]
    m = meta["machine"]
    parts = [f"# ppp_dist benchmark suite, {meta['stamp']} ({meta['mode']})", "",
             f"Machine: {m.get('cpu_count')} CPUs ({m.get('cpu_model', '?')}), {m.get('memory_gib')} GiB, "
             f"{m.get('platform')}; Python {m.get('python')}, numpy {m.get('numpy')}, numba {m.get('numba')}, "
             f"dask.distributed {m.get('distributed')}, zarr {m.get('zarr')}. Load average (1/5/15 min) at the "
             f"start {m.get('load_average')}, at the end {meta.get('load_end')}. Suite wall time "
             f"{meta.get('wall_s', 0) / 60:.1f} min (budget {meta['budget_min']} min).", ""]
    if results.get("skipped"):
        parts += ["## Skipped, extrapolated, failed", ""] + [f"* {s}" for s in results["skipped"]] + [""]

    a = results.get("assembly", {})
    parts += ["## a. Assembly per step (ops, whole volume, oracle patches) vs the NumPy reference", ""]
    if a.get("error"):
        parts += [f"failed: {a['error']}", ""]
    elif a:
        parts += [f"`{a['command']}` ({a['seconds']} s):", "", a["table"], ""] + a.get("notes", []) + [""]

    p = results.get("pipeline", {})
    runs = p.get("runs", [])
    parts += ["## b. Distributed pipeline (vote → agglomerate → paint), oracle patches", ""]
    ok = [r for r in runs if not r.get("error")]
    if ok:
        parts += ["End to end, per stage seconds (voxels/s) and peak RSS (max over the stage; worker = the "
                  "largest worker process). `*` = extrapolated, not run. Fused = patches computed per block "
                  "from the labels, none stored.", ""]
        head = ["run", "workers", "voxels", "blocks", "instances", "total s", "voxels/s", "vote s (vox/s)",
                "agglomerate s", "paint s (vox/s)", "worker peak MiB", "driver peak MiB", "write input s"]
        rows = []
        for r in ok:
            star = "*" if r.get("extrapolated") else ""
            vs, ps = _stage(r, "vote", "seconds"), _stage(r, "paint", "seconds")
            rows.append([f"{r['name']}{star}", r["workers"], r["voxels"], _stage(r, "vote", "blocks"),
                         r.get("instances"), f"{fmt(r['pipeline_s'])}{star}", f"{fmt(r['voxels_per_s'])}{star}",
                         f"{fmt(vs)} ({fmt(_stage(r, 'vote', 'voxels_per_s'))})",
                         fmt(_stage(r, "agglomerate", "seconds")),
                         f"{fmt(ps)} ({fmt(_stage(r, 'paint', 'voxels_per_s'))})"
                         + (f" + relabel {fmt(_stage(r, 'relabel', 'seconds'))}" if "relabel" in r["stages"] else ""),
                         r.get("worker_peak_mib"), r.get("driver_peak_mib"), r.get("write_input_s")])
        parts += [md_table(head, rows), ""]
        head = ["run", "workers", "stage", "blocks", "s", "voxels/s", "read voxels / voxel", "worker-s (ledger)",
                "read voxels per worker-s", "worker peak MiB", "driver peak MiB"]
        rows = []
        for r in ok:
            if r.get("extrapolated"):
                continue
            for name, s in r["stages"].items():
                rv = s.get("read_voxels")
                rows.append([r["name"], r["workers"], name, s.get("blocks"), s.get("seconds"), s.get("voxels_per_s"),
                             rv / r["voxels"] if rv else None, s.get("worker_s"),
                             rv / s["worker_s"] if rv and s.get("worker_s") else None, s.get("worker_peak_mib"),
                             s.get("driver_peak_mib")])
        parts += ["Per stage (`read voxels / voxel` = the halo overhead of the block grid; worker-s = the sum of "
                  "the blocks' seconds in the ledger):", "", md_table(head, rows), ""]
        whole = [r for r in ok if r.get("whole") and not r["whole"].get("error")]
        if whole:
            rows = [[r["name"], r["pipeline_s"], r["whole"]["seconds"], r["pipeline_s"] / r["whole"]["seconds"],
                     r["worker_peak_mib"], r["whole"]["peak_mib"], r["whole"].get("identical")] for r in whole]
            parts += ["Distributed (1 worker process, 1 thread; cluster start-up excluded) vs in-process "
                      "whole-volume `ops.assemble` (1 numba thread, reading the stored prediction included): the "
                      "cost of halos, scheduling and the DB.", "",
                      md_table(["volume", "distributed s", "whole-volume s", "distributed / whole",
                                "worker peak MiB", "whole-volume peak MiB", "same labels (bytes)"], rows), ""]
            top = max(whole, key=lambda r: r["voxels"])
            larger = sorted({r["voxels"] for r in ok if r["kind"] == top["kind"] and r["voxels"] > top["voxels"]})
            if larger:
                est = (top["whole"]["peak_mib"] - top["whole"].get("start_mib", 0)) * larger[0] / top["voxels"]
                parts += [f"Whole-volume `ops.assemble` is not run on larger volumes: its memory grows with the "
                          f"volume (the {top['name']} run needed {fmt(top['whole']['peak_mib'])} MiB; × "
                          f"{larger[0] / top['voxels']:.0f} voxels ≈ {est / 1024:.0f} GiB at the next size), "
                          "while a worker's peak stays bounded by its block.", ""]
        pairs = {}
        for r in ok:
            if not r.get("extrapolated"):
                pairs.setdefault(r["name"], {})[r["workers"]] = r
        rows = [[n, d[1]["pipeline_s"], d[2]["pipeline_s"], d[1]["pipeline_s"] / d[2]["pipeline_s"],
                 _stage(d[1], "vote", "seconds") / _stage(d[2], "vote", "seconds")]
                for n, d in pairs.items() if 1 in d and 2 in d]
        if rows:
            parts += ["1 vs 2 worker processes (2 CPUs shared with the rest of the machine's load):", "",
                      md_table(["volume", "1 worker s", "2 workers s", "speed-up", "vote speed-up"], rows), ""]
        st = {r["voxels"]: r for r in ok if r.get("mode") == "stored" and r["workers"] == 1
              and not r.get("extrapolated")}
        fu = {r["voxels"]: r for r in ok if r.get("mode") == "fused" and r["workers"] == 1
              and not r.get("extrapolated")}
        rows = [[st[v]["name"], st[v]["pipeline_s"], fu[v]["pipeline_s"], _stage(st[v], "vote", "seconds"),
                 _stage(fu[v], "vote", "seconds"), st[v]["write_input_s"], fu[v]["write_input_s"]]
                for v in sorted(set(st) & set(fu))]
        if rows:
            parts += ["Stored oracle prediction vs fused oracle (patches computed per block, also in the halo):", "",
                      md_table(["volume", "stored total s", "fused total s", "stored vote s", "fused vote s",
                                "write stored prediction s", "write labels s"], rows), ""]
    for r in runs:
        if r.get("error"):
            parts.append(f"* {r['name']}, {r['workers']} worker(s): failed: {r['error']}")
    parts.append("")

    c = results.get("agglomeration", {})
    parts += ["## c. Agglomeration: union-find vs networkx vs scipy.sparse.csgraph", ""]
    if c.get("error"):
        parts += [f"failed: {c['error']}", ""]
    elif c:
        parts += ["Random graph, n_edges / 2 sparse int64 ids; each (method, size) in its own process; peak = "
                  "max RSS while the method runs (VmHWM, reset after generating the graph), extra = peak − RSS "
                  "after generating the graph (time excludes the generation too); our union-find streams the edges "
                  "in batches of 1e6, scipy and networkx need them all in memory. `*` = not run to the end: "
                  "extrapolated linearly in the edge count from the method's largest measured size (a lower bound "
                  "where the cost per edge still grows).", "",
                  c["table"], ""]

    d = results.get("graph_db", {})
    parts += ["## d. Graph DB rows/s, SQLite vs PostgreSQL", ""]
    if d.get("error"):
        parts += [f"failed: {d['error']}", ""]
    elif d:
        parts += [f"{d['blocks']} blocks × ({d['rows_per_block']:,} fragments + {d['rows_per_block']:,} edges), "
                  f"one transaction per block; the parallel write uses {d['writers']} processes.", "", d["table"], ""]

    e = results.get("bytes_per_voxel", [])
    parts += ["## e. Bytes per voxel of every stored intermediate (original: 686 B/voxel)", ""]
    if e:
        rows = [[r["what"], r.get("nominal"), r.get("stored"), r.get("fraction_of_686"),
                 r.get("rows_per_mvoxel"), r.get("source")] for r in e]
        parts += ["nominal = uncompressed bytes per voxel; stored = bytes on disk (zarr blosc/zstd, SQLite file) "
                  "per voxel; oracle patches are 0/1 and compress far better than a network's soft output "
                  "(the soft rows show the other end).", "",
                  md_table(["intermediate", "nominal B/voxel", "stored B/voxel", "÷ 686", "DB rows per 10⁶ voxels",
                            "source"], rows, align="lrrrrl"), ""]

    f = results.get("model", {})
    parts += ["## f. Model: a 1 TB volume (10¹² voxels) on N workers", ""]
    if f.get("error"):
        parts += [f"not computed: {f['error']}", ""]
    elif f:
        pr = f["parameters"]
        io_bps = f["io"]["io_bytes_per_s"]
        io_text = "ignored" if not io_bps else f"{fmt(io_bps / 1e9)} GB/s"
        net_rate = pr.get("network_voxels_per_s")
        net_text = (f"the network {fmt(net_rate)} output voxels/s ({pr.get('network_device')}; {pr.get('network')}), "
                    f"{pr['network_ratio']:g} output voxels per voxel (the stored prediction)" if net_rate else
                    "no network rate measured (the predict term is left out)")
        parts += [f"Rates from {pr['rates_from']}: vote {fmt(pr['vote_read_rate'])} read voxels per worker-s, "
                  f"paint {fmt(pr['paint_read_rate'])} (halos {pr['vote_halo']} / {pr['paint_halo']}); {net_text}. "
                  f"From {pr['density_from']} (block {pr['block']}): {fmt(pr['rows_per_voxel'] * 1e6)} graph rows "
                  f"and {fmt(pr['clusters_per_voxel'] * 1e6)} clusters per 10⁶ voxels, "
                  f"{fmt(pr['storage_bytes_per_voxel'])} B/voxel of graph storage; agglomeration "
                  f"{fmt(pr['agglomerate_s_per_cluster'] * 1e6)} µs per cluster; DB writes "
                  f"{fmt(pr['db_write_rows_per_s'])} rows/s ({pr['db_backend']}, parallel writers). I/O: {io_text}.",
                  "", "Assumptions: compute-bound blocks, perfectly parallel over workers (1 process, 1 thread "
                  "each, no contention); a core voxel costs ((b + 2·halo)/b)³ read voxels (interior blocks); one DB "
                  "server bounds the vote stage by its measured parallel write rate; the agglomeration counted as "
                  "if none of it spread over the workers (an upper bound); the network on as many workers as the "
                  "other stages, at the measured rate; the data's density as in the synthetic tubes with 5³ oracle "
                  "patches; scheduler overhead, relabel, failures and retries are ignored; I/O as stated. "
                  "`extrapolate_time()` in scripts/bench_model.py is the formula.", "",
                  md_table(["workers", "predict h", "vote h", "DB write h", "agglomerate h", "paint h", "total h",
                            "without the network h", "limiting", "network voxels/s for 24 h", "DB rows",
                            "graph storage TB"],
                           [[r["workers"], r["predict_h"], r["vote_h"], r["db_write_h"], r["agglomerate_h"],
                             r["paint_h"], r["total_h"], r["without_network_h"], r["limiting"],
                             r["network_rate_for_24h"], f"{r['db_rows']:.2e}", r["storage_tb"]] for r in f["rows"]]),
                  "",
                  *([f"Network output voxels per voxel (default network, tile {f['network_ratios']['tile']}, "
                     f"vote halo {f['network_ratios']['vote_halo']}): stored prediction "
                     f"{f['network_ratios']['stored']:.2f}; fused "
                     + ", ".join(f"{b}³ blocks {r:.1f}" for b, r in f["network_ratios"]["fused"].items()), ""]
                    if f.get("network_ratios") else []),
                  "Halo factor ((b + 2·halo)/b)³ by block side: "
                  + ", ".join(f"{b}³: vote {v['vote']:.2f}, paint {v['paint']:.2f}" for b, v in
                              f["halo_factors"].items()), ""]
    parts.append("Plots: " + ", ".join(results.get("plots", [])))
    return "\n".join(parts) + "\n"


# --- plots ------------------------------------------------------------------------------------------------------

def plots(results: dict[str, Any], out: Path) -> list[str]:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    made: list[str] = []

    def save(fig: Any, name: str) -> None:
        fig.tight_layout()
        fig.savefig(out / name, dpi=110)
        plt.close(fig)
        made.append(name)

    runs = [r for r in results.get("pipeline", {}).get("runs", []) if not r.get("error")]
    if runs:
        fig, axes = plt.subplots(1, 3, figsize=(16, 4.5))
        groups: dict[str, list] = {}
        for r in runs:
            groups.setdefault(f"{r['kind']} {r['mode']}, {r['workers']}w", []).append(r)
        for label, rs in sorted(groups.items()):
            rs = sorted(rs, key=lambda r: r["voxels"])
            for ax, key, stage in ((axes[0], "voxels_per_s", None), (axes[1], "seconds", "vote"),
                                   (axes[1], "seconds", "paint")):
                xs = [r["voxels"] for r in rs]
                ys = [r[key] if stage is None else _stage(r, stage, key) for r in rs]
                lab = label if stage is None else f"{stage}: {label}"
                line, = ax.plot(xs, ys, "-", label=lab, alpha=0.7)
                for x, y, r in zip(xs, ys, rs):
                    ax.plot([x], [y], "o", mfc="none" if r.get("extrapolated") else line.get_color(),
                            color=line.get_color())
            xs = [r["voxels"] for r in rs]
            axes[2].plot(xs, [r["worker_peak_mib"] for r in rs], "o-", label=f"worker: {label}")
            axes[2].plot(xs, [r["driver_peak_mib"] for r in rs], "s--", label=f"driver: {label}")
        axes[0].set(xscale="log", xlabel="voxels", ylabel="voxels/s (end to end)", title="pipeline throughput")
        axes[1].set(xscale="log", yscale="log", xlabel="voxels", ylabel="seconds", title="stage time")
        axes[2].set(xscale="log", xlabel="voxels", ylabel="peak RSS MiB", title="peak memory")
        axes[0].set_ylim(bottom=0)
        axes[2].set_ylim(bottom=0)
        for ax in axes:
            ax.grid(alpha=0.3)
            ax.legend(fontsize=6)
        fig.suptitle("pipeline (hollow markers: extrapolated)")
        save(fig, "pipeline.png")
    tl_path = out / "pipeline_timelines.json"
    if tl_path.exists():
        timelines = json.loads(tl_path.read_text())
        if timelines:
            name = max(timelines, key=lambda k: len(timelines[k]["timeline"]))
            t = timelines[name]["timeline"]
            fig, ax = plt.subplots(figsize=(9, 4))
            ax.plot([x[0] for x in t], [x[1] for x in t], label="largest worker RSS")
            ax.plot([x[0] for x in t], [x[2] for x in t], label="driver RSS")
            ax.set(xlabel="seconds", ylabel="MiB", title=f"memory over time: {name}")
            ax.legend()
            ax.grid(alpha=0.3)
            save(fig, "pipeline_memory_timeline.png")
    agg = results.get("agglomeration", {}).get("rows", [])
    if agg:
        fig, axes = plt.subplots(1, 2, figsize=(11, 4))
        for method in dict.fromkeys(r["method"] for r in agg):
            rs = sorted([r for r in agg if r["method"] == method and r.get("seconds")], key=lambda r: r["edges"])
            for ax, key in ((axes[0], "seconds"), (axes[1], "peak_mib")):
                line, = ax.plot([r["edges"] for r in rs], [r[key] for r in rs], "-", label=method)
                for r in rs:
                    ax.plot([r["edges"]], [r[key]], "o", color=line.get_color(),
                            mfc="none" if r.get("extrapolated") else line.get_color())
        axes[0].set(xscale="log", yscale="log", xlabel="edges", ylabel="seconds", title="agglomeration time")
        axes[1].set(xscale="log", yscale="log", xlabel="edges", ylabel="peak RSS MiB", title="peak memory")
        for ax in axes:
            ax.grid(alpha=0.3)
            ax.legend()
        fig.suptitle("hollow markers: extrapolated")
        save(fig, "agglomeration.png")
    db = results.get("graph_db", {}).get("backends", {})
    if db:
        import numpy as np

        ops = [r["operation"] for r in next(iter(db.values()))]
        fig, ax = plt.subplots(figsize=(10, 4.5))
        width = 0.8 / len(db)
        for k, (backend, rows) in enumerate(db.items()):
            ax.barh(np.arange(len(ops)) + k * width, [r["rows_per_s"] or 0 for r in rows], height=width,
                    label=backend)
        ax.set_yticks(np.arange(len(ops)) + width * (len(db) - 1) / 2, ops, fontsize=7)
        ax.set(xlabel="rows/s", title="graph DB")
        ax.legend()
        ax.grid(alpha=0.3, axis="x")
        save(fig, "graph_db.png")
    bpv = [r for r in results.get("bytes_per_voxel", []) if (r.get("stored") or r.get("nominal"))]
    if bpv:
        fig, ax = plt.subplots(figsize=(10, 0.3 * len(bpv) + 1.5))
        labels = [f"{r['what'][:60]} ({r['source'][:25]})" for r in bpv]
        vals = [r["stored"] if r.get("stored") else r["nominal"] for r in bpv]
        colors = ["tab:blue" if r.get("stored") else "tab:gray" for r in bpv]
        ax.barh(range(len(bpv)), vals, color=colors)
        ax.axvline(ORIGINAL_BPV, color="red", ls="--", label="original 686 B/voxel")
        ax.set_yticks(range(len(bpv)), labels, fontsize=6)
        ax.set(xscale="log", xlabel="bytes per voxel (blue: stored, gray: nominal)")
        ax.invert_yaxis()
        ax.legend(fontsize=7)
        save(fig, "bytes_per_voxel.png")
    return made
