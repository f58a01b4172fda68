"""Benchmark agglomeration: our numba union-find vs networkx vs scipy.sparse.csgraph.

Every (method, size) runs in its own subprocess so that peak memory (``resource.getrusage`` maxrss) is
that method's alone. The graph: ``n_edges`` random edges over ``n_edges // 2`` sparse int64 ids
(``block << 32 | local``, like the pipeline's fragment ids).

* ``union_find`` streams the edges in batches of 1e6 (generated on the fly, as they would be read from the
  DB), so its memory is the id array + parent + rank, independent of the edge count.
* ``scipy`` and ``networkx`` need all edges in memory at once (plus their own structures).

Time excludes generating the graph; ``peak MiB`` is the process's maximum RSS (includes the interpreter,
numpy/numba and, for scipy/networkx, the generated edge arrays); ``extra MiB`` is peak minus the RSS
right after generation.

    .venv/bin/python scripts/bench_agglomerate.py --sizes 1e6 1e7 [--methods union_find scipy networkx]
"""

from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import time

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


def _maxrss_mib() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def run_one(method: str, n_edges: int, seed: int = 0) -> dict:
    ids = _ids(n_edges // 2, seed)
    if method == "union_find":
        from ppp_dist.ops.union_find import UnionFind

        UnionFind(ids[:10]).union(ids[:2], ids[1:3])  # compile (cached) outside the timing
        base = _maxrss_mib()
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
        base = _maxrss_mib()
        t0 = time.perf_counter()
        if method == "scipy":
            from scipy.sparse import coo_matrix
            from scipy.sparse.csgraph import connected_components

            nodes = np.unique(np.concatenate([ids, u, v]))
            iu, iv = np.searchsorted(nodes, u), np.searchsorted(nodes, v)
            n = len(nodes)
            graph = coo_matrix((np.ones(len(iu), np.int8), (iu, iv)), shape=(n, n)).tocsr()
            n_comp, comp = connected_components(graph, directed=False)
            smallest = np.full(n_comp, np.iinfo(np.int64).max)
            np.minimum.at(smallest, comp, nodes)
            labels = smallest[comp]
        elif method == "networkx":
            import networkx as nx

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


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", nargs="+", type=float, default=[1e6, 1e7])
    parser.add_argument("--methods", nargs="+", default=["union_find", "scipy", "networkx"])
    parser.add_argument("--timeout", type=float, default=600, help="seconds per run")
    parser.add_argument("--one", nargs=2, metavar=("METHOD", "EDGES"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.one:
        print(json.dumps(run_one(args.one[0], int(float(args.one[1])))))
        return
    rows = []
    for size in args.sizes:
        for method in args.methods:
            try:
                out = subprocess.run([sys.executable, __file__, "--one", method, str(int(size))], capture_output=True,
                                     text=True, timeout=args.timeout)
            except subprocess.TimeoutExpired:
                rows.append({"method": method, "edges": int(size), "seconds": f"> {args.timeout:.0f}"})
                continue
            if out.returncode != 0:
                rows.append({"method": method, "edges": int(size), "seconds": f"failed ({out.returncode})",
                             "error": out.stderr.strip().splitlines()[-1:]})
                continue
            rows.append(json.loads(out.stdout.strip().splitlines()[-1]))
            print(json.dumps(rows[-1]), file=sys.stderr, flush=True)
    print("| edges | nodes | method | seconds | peak MiB | extra MiB | components |")
    print("|---:|---:|---|---:|---:|---:|---:|")
    for r in rows:
        print(f"| {r['edges']:.0e} | {r.get('nodes', '')} | {r['method']} | {r['seconds']} | {r.get('peak_mib', '')} | "
              f"{r.get('extra_mib', '')} | {r.get('components', '')} |")


if __name__ == "__main__":
    main()
