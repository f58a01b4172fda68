"""The graph store on SQLite and PostgreSQL: the same tests for both backends."""

from __future__ import annotations

import doctest
import multiprocessing
import sqlite3

import numpy as np
import pytest

from ppp_dist.errors import BlockError, DatabaseError
from ppp_dist.io import graph_store
from ppp_dist.io.graph_store import make_edges, make_fragments
from ppp_dist.io.stores import StoreFactory, open_graph_store


@pytest.fixture
def store(database_config, tmp_path):
    with open_graph_store(database_config, tmp_path) as s:
        yield s


def _block_graph(block: int, n: int = 5, seed: int = 0):
    """Fragments block*1000 + 1..n and a chain of edges among them plus one to the next block."""
    rng = np.random.default_rng(seed + block)
    ids = block * 1000 + np.arange(1, n + 1)
    frags = make_fragments(ids, positions=rng.integers(0, 100, (n, 3)), sizes=rng.integers(1, 50, n))
    u = np.append(ids[:-1], ids[0])
    v = np.append(ids[1:], (block + 1) * 1000 + 1)
    edges = make_edges(u, v, rng.random(n), rng.integers(1, 9, n))
    return frags, edges


def _all_edges(store):
    rows = sorted(zip(*(np.concatenate(col).tolist() if col else [] for col in
                        zip(*[(b.u, b.v, b.weight, b.count) for b in store.iter_edges(7)]))))
    return rows


def _all_fragments(store):
    parts = list(store.iter_fragments(3))
    arr = np.concatenate(parts) if parts else np.zeros(0, graph_store.FRAGMENT_DTYPE)
    return sorted(arr.tolist())


def test_write_block_round_trip_and_ledger(store):
    frags, edges = _block_graph(2)
    store.write_block("vote", 2, frags, edges, {"patches": np.int64(17), "voxels": 123}, seconds=1.5,
                      worker="w1", attempts=2)
    assert _all_fragments(store) == sorted(frags.tolist())
    assert _all_edges(store) == sorted(edges.tolist())
    assert store.done_blocks("vote") == {2} and store.done_blocks("paint") == set()
    (row,) = store.ledger_rows("vote")
    assert (row.block, row.status, row.worker, row.seconds, row.attempts) == (2, "done", "w1", 1.5, 2)
    assert row.counts == {"edges": 5, "fragments": 5, "patches": 17, "voxels": 123} and row.error == ""
    assert store.num_fragments() == 5 and store.num_edges() == 5


def test_rewriting_a_block_replaces_its_rows(store):
    frags, edges = _block_graph(1, n=6)
    store.write_block("vote", 1, frags, edges)
    other_f, other_e = _block_graph(2, n=4)
    store.write_block("vote", 2, other_f, other_e)
    store.write_block("vote", 1, frags, edges)  # a retry: same rows, no duplicates
    assert store.num_fragments() == 10 and store.num_edges() == 10
    small_f, small_e = frags[:2], edges[:1]  # a re-run with other parameters: fewer rows, nothing stale
    store.write_block("vote", 1, small_f, small_e, {"run": 2})
    assert _all_fragments(store) == sorted(small_f.tolist() + other_f.tolist())
    assert _all_edges(store) == sorted(small_e.tolist() + other_e.tolist())
    assert [r.counts["run"] for r in store.ledger_rows("vote") if r.block == 1] == [2]


def test_failed_write_changes_nothing(store):
    frags, edges = _block_graph(1)
    store.write_block("vote", 1, frags, edges)
    store.mark_failed("vote", 3, "earlier failure", 1)
    clash = make_fragments([3001, 1002])  # 1002 belongs to block 1
    with pytest.raises(BlockError, match="block 3: a fragment id or edge of this block is already stored by another"):
        store.write_block("vote", 3, clash, make_edges([3001], [3005], [0.5]))
    assert _all_fragments(store) == sorted(frags.tolist())  # no partial insert of 3001, no edge
    assert _all_edges(store) == sorted(edges.tolist())
    assert {r.block: r.status for r in store.ledger_rows("vote")} == {1: "done", 3: "failed"}


def test_edges_are_normalised_and_validated(store):
    store.write_block("vote", 0, None, {"u": np.array([9, 3], np.uint64), "v": np.array([4, 8]),
                                        "weight": np.array([0.1, np.inf])})
    assert _all_edges(store) == [(3, 8, np.inf, 1), (4, 9, 0.1, 1)]
    cases = [
        ({"u": [1, 2], "v": [2, 3], "weight": [0.5, np.nan]}, r"block 5: 1 edge weights are NaN \(first: edge 2-3\)"),
        ({"u": [4], "v": [4], "weight": [1.0]}, "edge 4-4 joins a fragment to itself"),
        ({"u": [1, 2], "v": [2, 1], "weight": [1.0, 0.5]}, "edge 1-2 appears twice"),
        ({"u": np.array([2**63], np.uint64), "v": np.array([1], np.uint64), "weight": [1.0]},
         r"edge endpoint u 9223372036854775808 does not fit a signed 64-bit SQL id"),
        ({"u": [0], "v": [1], "weight": [1.0]}, r"edge endpoint u 0 is not a fragment id; ids must be >= 1"),
        ({"u": [1.0], "v": [2.0], "weight": [1.0]}, "must be integers, got dtype float64"),
    ]
    for edges, message in cases:
        with pytest.raises(BlockError, match=message):
            store.write_block("vote", 5, None, edges)
    assert store.done_blocks("vote") == {0}


def test_fragment_validation(store):
    with pytest.raises(BlockError, match="fragment id 7 appears twice"):
        store.write_block("vote", 1, make_fragments([7, 8, 7]))
    with pytest.raises(BlockError, match="does not fit a signed 64-bit"):
        store.write_block("vote", 1, {"id": np.array([2**64 - 1], np.uint64)})
    with pytest.raises(ValueError, match="does not fit a signed 64-bit"):
        make_fragments(np.array([2**63], np.uint64))
    big = 2**63 - 1  # the largest id survives both backends
    store.write_block("vote", 1, {"id": np.array([big, 1]), "position": [(1, 2, 3), (4, 5, 6)], "size": [9, 10]},
                      make_edges([1], [big], [2.0], [3]))
    assert _all_fragments(store) == [(1, 4, 5, 6, 10), (big, 1, 2, 3, 9)]
    assert _all_edges(store) == [(1, big, 2.0, 3)]
    assert store.fragment_ids().tolist() == [1, big]


def test_streaming_reads_batches_threshold_and_block_range(store):
    for block in range(6):
        store.write_block("vote", block, *_block_graph(block, n=7))
    batches = list(store.iter_edges(batch_size=4))
    assert all(len(b.u) <= 4 for b in batches) and sum(len(b.u) for b in batches) == 42
    assert all(b.u.dtype == np.int64 and b.weight.dtype == np.float64 and b.count.dtype == np.int64 for b in batches)
    every = np.concatenate([b.weight for b in batches])
    above = [b for b in store.iter_edges(5, min_weight=0.5)]
    assert sum(len(b.u) for b in above) == int((every > 0.5).sum()) == store.num_edges(0.5)
    assert all((b.weight > 0.5).all() for b in above)
    ranged = np.concatenate([b.u for b in store.iter_edges(3, blocks=(2, 4))])
    assert sorted(set(ranged // 1000)) == [2, 3] and len(ranged) == 14
    assert sum(len(f) for f in store.iter_fragments(batch_size=5)) == 42
    with pytest.raises(ValueError, match="batch_size"):
        list(store.iter_edges(0))


def test_streaming_by_tier(store):
    """tier=1 streams the primary-consensus edges (count > 0), tier=2 the fallback ones (count < 0)."""
    frags, edges = _block_graph(0, n=9)
    edges["count"][::3] *= -1
    store.write_block("vote", 0, frags, edges)
    for tier, sign in ((1, 1), (2, -1)):
        got = [b for b in store.iter_edges(4, tier=tier)]
        counts = np.concatenate([b.count for b in got])
        assert len(counts) == int((np.sign(edges["count"]) == sign).sum()) and (np.sign(counts) == sign).all()
        above = np.concatenate([b.weight for b in store.iter_edges(4, min_weight=0.5, tier=tier)])
        assert len(above) == int(((np.sign(edges["count"]) == sign) & (edges["weight"] > 0.5)).sum())
    with pytest.raises(ValueError, match="tier must be 1 or 2"):
        list(store.iter_edges(4, tier=3))


def test_ledger_failed_done_reset_and_summary(store):
    store.write_block("vote", 1, *_block_graph(1), counts={"voxels": 10}, seconds=2.0)
    store.mark_done("vote", 2, {"voxels": 5}, seconds=1.0)
    store.mark_failed("vote", 3, "ValueError: bad block", 3, seconds=0.5, worker="w")
    store.mark_failed("vote", 1, "late duplicate attempt", 2)  # never hides a success
    rows = {r.block: r for r in store.ledger_rows("vote")}
    assert rows[1].status == "done" and rows[3].status == "failed" and rows[3].attempts == 3
    assert rows[3].error == "ValueError: bad block"
    summary = store.ledger_summary("vote")
    assert (summary["done"], summary["failed"], summary["block_seconds"]) == (2, 1, 3.5)
    assert summary["counts"]["voxels"] == 15 and summary["counts"]["fragments"] == 5
    store.mark_done("vote", 3, seconds=0.1)  # a later success replaces the failure
    assert store.done_blocks("vote") == {1, 2, 3} and store.stages() == ["vote"]
    store.reset_blocks("vote", [2])
    assert store.done_blocks("vote") == {1, 3}
    store.reset_blocks("vote")
    assert store.done_blocks("vote") == set()


def test_lut_is_replaced_whole(store):
    store.write_lut(np.array([5, 1, 9]), np.array([1, 1, 9]))
    assert [a.tolist() for a in store.read_lut()] == [[1, 5, 9], [1, 1, 9]]
    store.write_lut(np.array([2]), np.array([2]))
    assert [a.tolist() for a in store.read_lut()] == [[2], [2]]
    with pytest.raises(ValueError, match="differ in length"):
        store.write_lut(np.array([1, 2]), np.array([1]))


def _writer(factory: StoreFactory, worker: int, n_blocks: int) -> None:
    store = factory()
    try:
        for k in range(n_blocks):
            block = worker * n_blocks + k
            store.write_block("vote", block, *_block_graph(block, n=50), counts={"worker": worker})
    finally:
        store.close()


def test_sixteen_concurrent_writer_processes(database_config, tmp_path):
    """16 spawned processes x 20 blocks of 50 fragments + 50 edges: every row, no lock errors, exact counts."""
    factory = StoreFactory(database_config, str(tmp_path))
    factory().close()  # schema first, as the driver does before submitting
    ctx = multiprocessing.get_context("spawn")
    procs = [ctx.Process(target=_writer, args=(factory, w, 20)) for w in range(16)]
    for p in procs:
        p.start()
    for p in procs:
        p.join(timeout=120)
    assert [p.exitcode for p in procs] == [0] * 16
    with factory() as store:
        assert store.num_fragments() == 16 * 20 * 50 and store.num_edges() == 16 * 20 * 50
        assert store.done_blocks("vote") == set(range(320))
        expected = sorted(e for b in range(320) for e in _block_graph(b, n=50)[1].tolist())
        assert _all_edges(store) == expected
        assert sorted(r.counts["worker"] for r in store.ledger_rows("vote")) == sorted(list(range(16)) * 20)


def test_sqlite_lock_contention_is_retried(tmp_path, monkeypatch):
    from ppp_dist.config import DatabaseConfig
    from ppp_dist.io import database

    config = DatabaseConfig(path=str(tmp_path / "g.sqlite"))
    with open_graph_store(config) as store:
        blocker = sqlite3.connect(config.path, timeout=0, isolation_level=None)
        blocker.execute("BEGIN IMMEDIATE")  # another writer holds the lock ...
        store.db.connection.execute("PRAGMA busy_timeout = 10")
        monkeypatch.setattr(database, "RETRY_SECONDS", 0.3)
        with pytest.raises(DatabaseError, match="writing block 1 of stage vote: .* stayed locked for 0 s .*PostgreSQL"):
            store.write_block("vote", 1, *_block_graph(1))
        blocker.execute("COMMIT")  # ... and lets go: the same write now goes through
        store.write_block("vote", 1, *_block_graph(1))
        assert store.done_blocks("vote") == {1}


def test_doctests():
    assert doctest.testmod(graph_store).failed == 0
