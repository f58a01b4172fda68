"""Benchmark agglomeration: our numba union-find vs networkx vs scipy.sparse.csgraph.

Every (method, size) runs in its own subprocess so that peak memory (``resource.getrusage`` maxrss) is
that method's alone. The graph: ``n_edges`` random edges over ``n_edges // 2`` sparse int64 ids
(``block << 32 | local``, like the pipeline's fragment ids).

* ``union_find`` streams the edges in batches of 1e6 (generated on the fly, as they would be read from the
  DB), so its memory is the id array + parent + rank, independent of the edge count.
* ``scipy`` and ``networkx`` need all edges in memory at once (plus their own structures).

Time excludes generating the graph; ``peak MiB`` is the process's maximum RSS while the method runs (VmHWM,
reset after the generation through ``/proc/self/clear_refs``; includes the interpreter, numpy/numba and,
for scipy/networkx, the generated edge arrays); ``extra MiB`` is peak minus the RSS right after generation.

    .venv/bin/python scripts/bench_agglomerate.py --sizes 1e6 1e7 1e8 [--methods union_find scipy networkx] \
        [--extrapolate networkx 1e7 --extrapolate scipy 1e8] [--out runs/bench_agglomerate.json]

``--extrapolate METHOD N`` does not run METHOD at N edges or more and reports its largest measured size scaled
linearly in the edge count instead (marked ``*``; time at that size's cost per edge, memory per edge); a run
that times out or fails is extrapolated the same way. This is a lower bound for time: random ids defeat the
caches more as the graph grows (our union-find: 2.6e6 edges/s at 1e6, 1.1e6 at 1e7, 6.6e5 at 1e8).
"""

from __future__ import annotations

import argparse
import json
import math
import resource
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

BATCH = 1_000_000


def _ids(n_nodes: int, seed: int) -> np.ndarray:
    rng = np.random.default_rng(seed)
    blocks = rng.integers(0, 60_000, n_nodes).astype(np.int64)
    local = rng.integers(1, 2**20, n_nodes).astype(np.int64)
    return np.unique((blocks << 32) | local)


def _edge_batches(ids: np.ndarray, n_edges: int, seed: int):
    for k, start in enumerate(range(0, n_edges, BATCH)):
        rng = np.random.default_rng((seed, k))
        n = min(BATCH, n_edges - start)
        yield ids[rng.integers(0, len(ids), n)], ids[rng.integers(0, len(ids), n)]


def _reset_peak() -> float:
    """Reset this process's peak RSS to its current RSS (Linux: ``5 > /proc/self/clear_refs``), so that the
    peak measured next is the method's and not the graph generator's; returns the current RSS in MiB."""
    try:
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")
        for line in open("/proc/self/status"):
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    except (OSError, ValueError, IndexError):
        pass
    return _maxrss_mib()


def _maxrss_mib() -> float:
    """Peak RSS of this process (VmHWM: ``ru_maxrss`` would include the parent's RSS at the fork)."""
    try:
        for line in open("/proc/self/status"):
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
    except (OSError, ValueError, IndexError):
        pass
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def run_one(method: str, n_edges: int, seed: int = 0) -> dict:
    ids = _ids(n_edges // 2, seed)
    if method == "union_find":
        from ppp_dist.ops.union_find import UnionFind

        UnionFind(ids[:10]).union(ids[:2], ids[1:3])  # compile (cached) outside the timing
        base = _reset_peak()
        t0 = time.perf_counter()
        uf = UnionFind(ids)
        seconds = time.perf_counter() - t0
        for u, v in _edge_batches(ids, n_edges, seed):  # generating a batch is not timed
            t0 = time.perf_counter()
            uf.union(u, v)
            seconds += time.perf_counter() - t0
        t0 = time.perf_counter()
        labels = uf.labels()
        seconds += time.perf_counter() - t0
        n_comp = int(len(np.unique(labels)))
    else:
        parts = list(_edge_batches(ids, n_edges, seed))
        u = np.concatenate([p[0] for p in parts])
        v = np.concatenate([p[1] for p in parts])
        del parts
        if method == "scipy":  # imports are not timed
            from scipy.sparse import coo_matrix
            from scipy.sparse.csgraph import connected_components
        elif method == "networkx":
            import networkx as nx
        base = _reset_peak()
        t0 = time.perf_counter()
        if method == "scipy":
            nodes = np.unique(np.concatenate([ids, u, v]))
            iu, iv = np.searchsorted(nodes, u), np.searchsorted(nodes, v)
            n = len(nodes)
            graph = coo_matrix((np.ones(len(iu), np.int8), (iu, iv)), shape=(n, n)).tocsr()
            n_comp, comp = connected_components(graph, directed=False)
            smallest = np.full(n_comp, np.iinfo(np.int64).max)
            np.minimum.at(smallest, comp, nodes)
            labels = smallest[comp]
        elif method == "networkx":
            graph = nx.Graph()
            graph.add_nodes_from(ids.tolist())
            graph.add_edges_from(zip(u.tolist(), v.tolist()))
            n_comp = 0
            for _ in nx.connected_components(graph):
                n_comp += 1
        else:
            raise SystemExit(f"unknown method {method}")
        seconds = time.perf_counter() - t0
    peak = _maxrss_mib()
    return {"method": method, "edges": n_edges, "nodes": int(len(ids)), "components": int(n_comp),
            "seconds": round(seconds, 2), "peak_mib": round(peak), "extra_mib": round(peak - base)}


def run_matrix(sizes, methods, timeout: float = 600, extrapolate: dict[str, float] | None = None,
               log=None, prior: list[dict] | None = None) -> list[dict]:
    """Run every (size, method) in its own subprocess; ``extrapolate`` maps a method to the smallest edge
    count it is *not* run at: those sizes get a row scaled linearly in the edge count from the method's
    largest measured row (``extrapolated: True``; time and extra memory both O(E)). A run that times out
    or fails is reported as such and later sizes of that method are extrapolated too. ``prior``: rows of
    earlier calls, used as extrapolation bases (not returned)."""
    extrapolate = dict(extrapolate or {})
    for r in prior or []:
        if r.get("error") and not r.get("extrapolated"):
            extrapolate[r["method"]] = min(extrapolate.get(r["method"], float("inf")), r["edges"] + 1)
    rows: list[dict] = []
    known = list(prior or [])
    for size in sorted(sizes):
        for method in methods:
            n = int(size)
            if n >= extrapolate.get(method, float("inf")):
                rows.append(_extrapolated(known + rows, method, n))
                continue
            t0 = time.perf_counter()
            try:
                out = subprocess.run([sys.executable, __file__, "--one", method, str(n)], capture_output=True,
                                     text=True, timeout=timeout)
            except subprocess.TimeoutExpired:
                row = _extrapolated(known + rows, method, n)
                row["error"] = f"timed out after {timeout:.0f} s"
                rows.append(row)
                extrapolate[method] = min(extrapolate.get(method, float("inf")), n + 1)
                continue
            if out.returncode != 0:
                tail = out.stderr.strip().splitlines()[-1:] or [""]
                row = _extrapolated(known + rows, method, n)
                row["error"] = f"failed ({out.returncode}): {tail[0]}"
                rows.append(row)
                extrapolate[method] = min(extrapolate.get(method, float("inf")), n + 1)
                continue
            rows.append(json.loads(out.stdout.strip().splitlines()[-1])
                        | {"extrapolated": False, "process_s": round(time.perf_counter() - t0, 1)})
            if log:
                log(json.dumps(rows[-1]))
    return rows


def _extrapolated(rows: list[dict], method: str, n: int) -> dict:
    """Row of ``method`` at ``n`` edges from its largest measured row, linear in the edge count (time at the
    per-edge cost of that size, memory per edge). ``time_exponent`` reports, for information only, the power
    law through the two largest measured sizes."""
    base = [r for r in rows if r["method"] == method and not r.get("extrapolated") and r.get("seconds") is not None]
    if not base:
        return {"method": method, "edges": n, "seconds": None, "extrapolated": True, "error": "nothing measured"}
    base.sort(key=lambda r: r["edges"])
    b = base[-1]
    f = n / b["edges"]
    k = 1.0
    if len(base) > 1 and base[-2]["seconds"] > 0 and b["seconds"] > 0 and base[-2]["edges"] < b["edges"]:
        k = math.log(b["seconds"] / base[-2]["seconds"]) / math.log(b["edges"] / base[-2]["edges"])
    # the generated input scales too: 8 B per node id, + 16 B per edge (u, v) for the in-memory methods
    data = (8 * b["nodes"] + (0 if method == "union_find" else 16 * b["edges"])) / 2 ** 20
    fixed = b["peak_mib"] - b["extra_mib"] - data  # interpreter + libraries (peak = RSS at the start + extra)
    row = {"method": method, "edges": n, "nodes": int(b["nodes"] * f), "components": None,
           "seconds": round(b["seconds"] * f, 1), "peak_mib": round(fixed + (data + b["extra_mib"]) * f),
           "extra_mib": round(b["extra_mib"] * f), "extrapolated": True, "from_edges": b["edges"],
           "time_exponent": round(k, 2)}
    if b.get("process_s"):
        row["process_s"] = round(b["process_s"] * f, 1)
    return row


def table(rows: list[dict]) -> str:
    out = ["| edges | nodes | method | seconds | peak MiB | extra MiB | components | edges/s |",
           "|---:|---:|---|---:|---:|---:|---:|---:|"]
    for r in rows:
        star = "*" if r.get("extrapolated") else ""
        secs = r.get("seconds")
        rate = f"{r['edges'] / secs:,.0f}" if secs else ""
        cell = f"{secs}{star}" if secs is not None else r.get("error", "")
        if r.get("error") and secs is not None:
            cell += f" ({r['error']})"
        out.append(f"| {r['edges']:.0e} | {r.get('nodes', '') or ''} | {r['method']} | {cell} | "
                   f"{r.get('peak_mib', '')}{star} | {r.get('extra_mib', '')}{star} | {r.get('components') or ''} | "
                   f"{rate}{star} |")
    return "\n".join(out)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", nargs="+", type=float, default=[1e6, 1e7])
    parser.add_argument("--methods", nargs="+", default=["union_find", "scipy", "networkx"])
    parser.add_argument("--timeout", type=float, default=600, help="seconds per run")
    parser.add_argument("--extrapolate", nargs=2, action="append", default=[], metavar=("METHOD", "FROM_EDGES"),
                        help="do not run METHOD at >= FROM_EDGES edges; scale its largest measured row linearly")
    parser.add_argument("--out", help="also write the rows as JSON here")
    parser.add_argument("--one", nargs=2, metavar=("METHOD", "EDGES"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.one:
        print(json.dumps(run_one(args.one[0], int(float(args.one[1])))))
        return
    rows = run_matrix(args.sizes, args.methods, args.timeout, {m: float(e) for m, e in args.extrapolate},
                      log=lambda line: print(line, file=sys.stderr, flush=True))
    print(table(rows))
    if any(r.get("extrapolated") for r in rows):
        print("* not run: extrapolated linearly in the edge count from the method's largest measured size")
    if args.out:
        Path(args.out).parent.mkdir(parents=True, exist_ok=True)
        Path(args.out).write_text(json.dumps(rows, indent=1))


if __name__ == "__main__":
    main()
