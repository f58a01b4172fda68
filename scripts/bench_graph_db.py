"""Benchmark the graph store: write and read rates (rows/s), SQLite vs PostgreSQL.

* write: ``write_block`` of ``--blocks`` blocks, each with ``--rows`` fragments and ``--rows`` edges (one
  transaction per block, as the vote stage does), from 1 process and from ``--writers`` processes at once
  (timed from a common start signal, after every writer has imported, connected and generated its rows);
* read: ``iter_edges`` / ``iter_fragments`` in batches of 1e5 (streamed: keyset pages on SQLite, a
  server-side cursor on PostgreSQL), and ``write_lut`` of all fragments in one transaction.

Rows/s counts fragment + edge rows together for writes. PostgreSQL needs ``PPP_DIST_TEST_POSTGRES_DSN`` (or
``--dsn``); each run uses a fresh schema that is dropped afterwards.

    .venv/bin/python scripts/bench_graph_db.py --blocks 100 --rows 10000 --writers 4 [--dsn DSN] [--out x.json]
"""

from __future__ import annotations

import argparse
import json
import multiprocessing
import os
import sys
import tempfile
import time
import uuid
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from ppp_dist.config import DatabaseConfig  # noqa: E402
from ppp_dist.io.graph_store import make_edges, make_fragments  # noqa: E402
from ppp_dist.io.stores import StoreFactory


def block_graph(block: int, rows: int):
    rng = np.random.default_rng(block)
    ids = (np.int64(block) << 32) | np.arange(1, rows + 1, dtype=np.int64)
    frags = make_fragments(ids, positions=rng.integers(0, 1000, (rows, 3)), sizes=rng.integers(1, 1000, rows))
    nxt = (np.int64(block + 1) << 32) | rng.integers(1, rows + 1, rows)
    edges = make_edges(ids, nxt, rng.random(rows), rng.integers(1, 50, rows))
    return frags, edges


def _write(factory: StoreFactory, blocks: list[int], rows: int, ready, go) -> None:
    """Writer process: open the store and generate its blocks, report ready, wait for ``go``, write."""
    graphs = [(b, *block_graph(b, rows)) for b in blocks]
    with factory() as store:
        ready.release()
        go.wait()
        for b, f, e in graphs:
            store.write_block("bench", b, f, e)


def bench(config: DatabaseConfig, n_blocks: int, rows: int, writers: int) -> list[tuple[str, float, float]]:
    factory = StoreFactory(config)
    out = []
    factory().close()
    graphs = [block_graph(b, rows) for b in range(n_blocks)]  # generation outside the timing
    with factory() as store:
        t0 = time.perf_counter()
        for b, (f, e) in enumerate(graphs):
            store.write_block("bench", b, f, e)
        dt = time.perf_counter() - t0
        out.append(("write_block, 1 process", 2 * n_blocks * rows, dt))
        t0 = time.perf_counter()
        for b, (f, e) in enumerate(graphs[: max(1, n_blocks // 4)]):  # re-writes replace rows
            store.write_block("bench", b, f, e)
        dt = time.perf_counter() - t0
        out.append(("re-write_block (delete + insert), 1 process", 2 * max(1, n_blocks // 4) * rows, dt))
    del graphs
    ctx = multiprocessing.get_context("spawn")
    start = n_blocks
    ready, go = ctx.Semaphore(0), ctx.Event()
    procs = [ctx.Process(target=_write, args=(factory, list(range(start + w, start + n_blocks, writers)), rows,
                                              ready, go)) for w in range(writers)]
    for p in procs:
        p.start()
    for _ in procs:  # every writer has imported, connected and generated its rows
        if not ready.acquire(timeout=300):
            raise SystemExit("a writer process did not start")
    t0 = time.perf_counter()
    go.set()
    for p in procs:
        p.join()
    dt = time.perf_counter() - t0
    if any(p.exitcode != 0 for p in procs):
        raise SystemExit("a writer process failed")
    out.append((f"write_block, {writers} processes at once", 2 * n_blocks * rows, dt))
    with factory() as store:
        n_edges, n_frags = store.num_edges(), store.num_fragments()
        assert n_edges == n_frags == 2 * n_blocks * rows, (n_edges, n_frags)
        t0 = time.perf_counter()
        got = sum(len(b.u) for b in store.iter_edges(100_000))
        out.append(("iter_edges (batches of 1e5)", got, time.perf_counter() - t0))
        t0 = time.perf_counter()
        got = sum(len(b.u) for b in store.iter_edges(100_000, min_weight=0.5))
        out.append(("iter_edges weight > 0.5", got, time.perf_counter() - t0))
        t0 = time.perf_counter()
        ids = store.fragment_ids(100_000)
        out.append(("iter_fragments -> fragment_ids", len(ids), time.perf_counter() - t0))
        t0 = time.perf_counter()
        store.write_lut(ids, ids)
        out.append(("write_lut (one transaction)", len(ids), time.perf_counter() - t0))
    return out


def _postgres(dsn: str, n_blocks: int, rows: int, writers: int) -> list[tuple[str, float, float]]:
    """``bench`` on a fresh schema of the PostgreSQL server ``dsn`` (dropped afterwards)."""
    import psycopg2

    schema = f"bench_{uuid.uuid4().hex[:10]}"
    with psycopg2.connect(dsn, connect_timeout=10) as conn, conn.cursor() as cur:
        cur.execute(f"CREATE SCHEMA {schema}")
    sep = "&" if "?" in dsn else "?"
    try:
        return bench(DatabaseConfig(backend="postgres", dsn=f"{dsn}{sep}options=-csearch_path%3D{schema}"),
                     n_blocks, rows, writers)
    finally:
        conn = psycopg2.connect(dsn)
        with conn, conn.cursor() as cur:
            cur.execute(f"DROP SCHEMA {schema} CASCADE")
        conn.close()


def run(backends=("sqlite", "postgres"), blocks: int = 100, rows: int = 10_000, writers: int = 4,
        dsn: str = "", log=None) -> dict[str, list[dict]]:
    """Every backend's operations as ``{backend: [{operation, rows, seconds, rows_per_s}, ...]}``.

    PostgreSQL is left out (with a message to ``log``) when ``dsn`` is empty.
    """
    results: dict[str, list[dict]] = {}
    with tempfile.TemporaryDirectory() as tmp:
        for backend in backends:
            if backend == "sqlite":
                raw = bench(DatabaseConfig(path=str(Path(tmp) / "bench.sqlite")), blocks, rows, writers)
            elif not dsn:
                if log:
                    log("postgres skipped: no --dsn / PPP_DIST_TEST_POSTGRES_DSN")
                continue
            else:
                raw = _postgres(dsn, blocks, rows, writers)
            results[backend] = [{"operation": name, "rows": int(n), "seconds": round(dt, 3),
                                 "rows_per_s": round(n / dt) if dt > 0 else None} for name, n, dt in raw]
    return results


def table(results: dict[str, list[dict]]) -> str:
    if not results:
        return "(no backend ran)"
    names = [r["operation"] for r in next(iter(results.values()))]
    lines = ["| operation | " + " | ".join(f"{b} rows/s | {b} s" for b in results) + " |",
             "|---|" + "---:|---:|" * len(results)]
    for k, name in enumerate(names):
        cells = []
        for rows in results.values():
            r = rows[k]
            cells += [f"{r['rows_per_s']:,}" if r["rows_per_s"] else "–", f"{r['seconds']:.2f}"]
        lines.append(f"| {name} | " + " | ".join(cells) + " |")
    if len(results) > 1 and "postgres" in results and "sqlite" in results:
        lines[0] += " postgres / sqlite |"
        lines[1] += "---:|"
        for k in range(len(names)):
            a, b = results["postgres"][k]["rows_per_s"], results["sqlite"][k]["rows_per_s"]
            lines[k + 2] += f" {a / b:.2f} |" if a and b else " – |"
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--blocks", type=int, default=100)
    parser.add_argument("--rows", type=int, default=10_000, help="fragments and edges per block")
    parser.add_argument("--writers", type=int, default=4)
    parser.add_argument("--dsn", default=os.environ.get("PPP_DIST_TEST_POSTGRES_DSN", ""))
    parser.add_argument("--backends", nargs="+", default=["sqlite", "postgres"])
    parser.add_argument("--out", help="also write the results as JSON here")
    args = parser.parse_args()
    results = run(args.backends, args.blocks, args.rows, args.writers, args.dsn,
                  log=lambda m: print(m, file=sys.stderr))
    print(f"{args.blocks} blocks x {args.rows} fragments + {args.rows} edges")
    print(table(results))
    if args.out:
        Path(args.out).parent.mkdir(parents=True, exist_ok=True)
        Path(args.out).write_text(json.dumps(results, indent=1))


if __name__ == "__main__":
    main()
