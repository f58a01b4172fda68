"""The graph and the block ledger in the run database (SQLite or PostgreSQL): every SQL statement of ppp_dist.

:class:`GraphStore` holds the SQL both backends share; :mod:`~ppp_dist.io.sqlite_store` and
:mod:`~ppp_dist.io.postgres_store` add only what differs (bulk inserts, streaming reads). Nothing outside
``ppp_dist.io`` writes SQL (a rule test checks it): stages call the named methods below.

Two graphs live here:

* the **contracted graph** of the pipeline's two-tier partition (``ppp_dist.ops.contract``): per vote block
  its ``clusters``, the boundary ``patch_map`` and the ``links``; the agglomeration adds ``segments`` (phase 1),
  ``tier2_groups`` / ``tier2_roots`` (phase 2) and the final ``instances`` (cluster -> instance id);
* the **fragment graph** (``fragments``, ``edges``, ``lut``): the full patch graph that the mutex watershed
  needs, and the generic single-linkage agglomeration of :mod:`ppp_dist.pipeline.agglomerate`.

Blocks write with :meth:`GraphStore.write_block`: the block's rows of every graph table and its ledger row go
in ONE transaction that first deletes whatever the block wrote before, so a block that is retried, re-run with
other parameters or run twice by dask leaves exactly one copy of its rows. Reads stream in batches of NumPy
arrays, so no global graph object is ever built in Python.

Examples
--------
>>> from ppp_dist.config import DatabaseConfig
>>> from ppp_dist.io.stores import open_graph_store
>>> store = open_graph_store(DatabaseConfig(path=":memory:"))
>>> store.write_block("vote", 3, fragments=make_fragments([5, 9], positions=[(0, 1, 2), (0, 1, 9)], sizes=[4, 7]),
...                   edges=make_edges([9], [5], [0.8]), counts={"patches": 11})
>>> [(b.u.tolist(), b.v.tolist(), b.weight.tolist()) for b in store.iter_edges()]
[([5], [9], [0.8])]
>>> sorted(store.done_blocks("vote"))
[3]
"""

from __future__ import annotations

import datetime as _dt
import json
import logging
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from ppp_dist.errors import BlockError, DatabaseError
from ppp_dist.io.database import Database
from ppp_dist.io.graph_rows import (
    CLUSTER_DTYPE,
    EDGE_DTYPE,
    FRAGMENT_DTYPE,
    LINK_DTYPE,
    MAP_DTYPE,
    EdgeBatch,
    _as_ids,
    json_counts,
    make_clusters,
    make_edges,
    make_fragments,
    make_map,
    normalise_table,
)
from ppp_dist.ops.contract import ATTRACT, MUTEX, TIER2

logger = logging.getLogger(__name__)

STATUS_DONE, STATUS_FAILED, STATUS_PENDING = "done", "failed", "pending"
_DEFAULT_BATCH = 100_000

# every table a block writes, with its columns in insert order: (name, kind for the bulk insert)
_BLOCK_TABLES: dict[str, tuple[tuple[str, str], ...]] = {
    "fragments": (("id", "i8"), ("z", "i4"), ("y", "i4"), ("x", "i4"), ("size", "i8")),
    "edges": (("u", "i8"), ("v", "i8"), ("weight", "f8"), ("count", "i8")),
    "clusters": (("id", "i8"), ("size", "i8")),
    "patch_map": (("patch", "i8"), ("cluster", "i8")),
    "links": (("a", "i8"), ("b", "i8"), ("u", "i8"), ("v", "i8"), ("weight", "f8"), ("kind", "i4")),
}
_AGGLOMERATION_TABLES = ("lut", "segments", "tier2_groups", "tier2_roots", "instances")
GRAPH_TABLES = tuple(_BLOCK_TABLES) + _AGGLOMERATION_TABLES

# A link's other end: its cluster when the block owned v, else the cluster of v in the map of v's block
# (0 when that block never wrote it). ``l`` is the links table, ``m`` the patch_map joined on v.
_RESOLVED = ("SELECT l.a AS a, CASE WHEN l.b = 0 THEN COALESCE(m.cluster, 0) ELSE l.b END AS b, l.u AS u, "
             "l.v AS v, l.weight AS weight FROM links l LEFT JOIN patch_map m ON l.b = 0 AND m.patch = l.v "
             "WHERE l.kind = ?")
# ... and both ends as phase-1 segments (clusters that phase 1 did not merge are their own segment)
_SEGMENTED = ("SELECT COALESCE(sa.segment, r.a) AS sa, CASE WHEN r.b = 0 THEN 0 ELSE COALESCE(sb.segment, r.b) "
              "END AS sb, r.u AS u, r.v AS v, r.weight AS weight FROM (" + _RESOLVED + ") r "
              "LEFT JOIN segments sa ON sa.cluster = r.a LEFT JOIN segments sb ON sb.cluster = r.b")


@dataclass(frozen=True)
class LedgerRow:
    """One row of the ``blocks`` table."""

    stage: str
    block: int
    status: str
    worker: str
    seconds: float
    attempts: int
    counts: dict
    error: str
    updated: str


@dataclass(frozen=True)
class Tier2Batch:
    """The phase-2 input of some groups: tier-2 links and mutexes, both ends as phase-1 segments."""

    a: np.ndarray  # (T,) segment of the link's first end
    b: np.ndarray  # (T,) segment of the other end
    u: np.ndarray  # (T,) patch ids of the edge (the merge order's tie-break)
    v: np.ndarray
    weight: np.ndarray  # (T,) float64
    mutex_a: np.ndarray  # (M,) segments a mutex separates
    mutex_b: np.ndarray


def _now() -> str:
    return _dt.datetime.now(_dt.UTC).isoformat(timespec="milliseconds")


def _unresolved(v: int, where: str) -> DatabaseError:
    return DatabaseError(f"a link names patch {v}, which no block's map holds, in {where}: the vote block that "
                         "owns it was never written (failed or unfinished blocks of the vote stage?); finish that "
                         "stage, then agglomerate")


class GraphStore:
    """Graph tables and the block ledger of one run database: the SQL both backends share.

    Make one with :func:`~ppp_dist.io.stores.open_graph_store` (or a :class:`~ppp_dist.io.stores.StoreFactory`
    on workers). A store holds one connection and is not thread-safe: one per process (worker), see
    :func:`ppp_dist.pipeline.worker.worker_store`.
    """

    def __init__(self, db: Database) -> None:
        self.db = db

    # -- what the backends provide ---------------------------------------------------------------------------

    def _insert(self, cur: Any, table: str, columns: Sequence[tuple[str, str, np.ndarray]]) -> None:
        """Bulk insert of equally long column arrays [(name, "i8"|"i4"|"f8", values)]."""
        raise NotImplementedError

    def _stream(self, select: str, params: tuple, batch_size: int, dtype: np.dtype, key: str) -> Iterator[np.ndarray]:
        """Rows of ``select`` (a query whose first column is the unique integer ``key``) in batches."""
        raise NotImplementedError

    # -- the connection --------------------------------------------------------------------------------------

    @property
    def backend(self) -> str:
        return self.db.backend

    @property
    def where(self) -> str:
        return self.db.where

    def close(self) -> None:
        self.db.close()

    def __enter__(self) -> GraphStore:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def _count(self, sql: str, params: tuple = ()) -> int:
        return int(self.db.execute(sql, params)[0][0] or 0)

    def _write(self, what: str, statements: Sequence[tuple[str, tuple]], inserts: Sequence[tuple[str, Any]] = ()
               ) -> None:
        """``statements`` then the bulk ``inserts`` [(table, columns)] in one retried transaction."""
        def work() -> None:
            with self.db.transaction() as cur:
                for sql, params in statements:
                    cur.execute(sql, params)
                for table, columns in inserts:
                    self._insert(cur, table, columns)
        self.db.retrying(work, what)

    # -- writing blocks ----------------------------------------------------------------------------------------

    def write_block(self, stage: str, block_id: int, fragments: Any = None, edges: Any = None,
                    counts: Mapping[str, Any] | None = None, *, clusters: np.ndarray | None = None,
                    patch_map: np.ndarray | None = None, links: np.ndarray | None = None, seconds: float = 0.0,
                    worker: str = "", attempts: int = 1) -> None:
        """Replace the block's rows of every graph table and mark it done in the ledger, in one transaction.

        Parameters
        ----------
        stage, block_id : the ledger row; every row written is tagged with the block and deleted on a re-write.
        fragments, edges : the fragment graph (see :func:`make_fragments`, :func:`make_edges`).
        clusters, patch_map, links : the contracted graph (:func:`make_clusters`, :func:`make_map`,
            ``ppp_dist.ops.contract.LINK_DTYPE``).
        counts : small JSON-able numbers for the ledger (the row count of each table written is added).

        Raises
        ------
        BlockError
            Invalid ids, NaN weights, duplicates, or an id/edge another block has already stored.
        DatabaseError
            The database stayed locked longer than the retry budget.
        """
        block_id = int(block_id)
        given = {"fragments": fragments, "edges": edges, "clusters": clusters, "patch_map": patch_map, "links": links}
        rows = {name: normalise_table(name, value, block_id) for name, value in given.items() if value is not None}
        all_counts = {**{name: len(r) for name, r in rows.items()}, **dict(counts or {})}
        if "fragments" not in all_counts and "edges" not in all_counts and not rows:
            all_counts = {"fragments": 0, "edges": 0, **all_counts}
        counts_json = json_counts(all_counts)

        def work() -> None:
            with self.db.transaction() as cur:
                for table in _BLOCK_TABLES:
                    cur.execute(f"DELETE FROM {table} WHERE block = ?", (block_id,))
                for table, r in rows.items():
                    cols = [(name, kind, r[name]) for name, kind in _BLOCK_TABLES[table]]
                    self._insert(cur, table, cols + [("block", "i8", np.full(len(r), block_id, np.int64))])
                self._upsert_ledger(cur, stage, block_id, STATUS_DONE, worker, seconds, attempts, counts_json, "")
        try:
            self.db.retrying(work, f"writing block {block_id} of stage {stage}")
        except self.db.driver_errors as err:
            if "unique" in str(err).lower() or "primary key" in str(err).lower():
                raise BlockError(block_id, f"a fragment id or edge of this block is already stored by another "
                                           f"block ({str(err).strip().splitlines()[0]}); every fragment and edge "
                                           "must be written by exactly one block (the owner of min(u, v))") from err
            raise DatabaseError(f"writing block {block_id} of stage {stage} to {self.where} failed: "
                                f"{str(err).strip().splitlines()[0]}") from err

    def _upsert_ledger(self, cur: Any, stage: str, block_id: int, status: str, worker: str, seconds: float,
                       attempts: int, counts_json: str, error: str, *, keep_done: bool = False) -> None:
        guard = " WHERE blocks.status <> 'done'" if keep_done else ""
        cur.execute(
            "INSERT INTO blocks (stage, block, status, worker, seconds, attempts, counts, error, updated) "
            "VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?) ON CONFLICT (stage, block) DO UPDATE SET status = excluded.status, "
            "worker = excluded.worker, seconds = excluded.seconds, attempts = excluded.attempts, "
            "counts = excluded.counts, error = excluded.error, updated = excluded.updated" + guard,
            (stage, int(block_id), status, worker, float(seconds), int(attempts), counts_json, error, _now()))

    def clear_graph(self) -> None:
        """Delete every graph row (both graphs and all agglomeration results): a new vote stage starts."""
        self._write("clearing the graph", [(f"DELETE FROM {t}", ()) for t in GRAPH_TABLES])

    def clear_agglomeration(self) -> None:
        """Delete the results of an earlier agglomeration (LUT, segments, tier-2 tables, instances)."""
        self._write("clearing the agglomeration", [(f"DELETE FROM {t}", ()) for t in _AGGLOMERATION_TABLES])

    # -- the ledger --------------------------------------------------------------------------------------------

    def mark_done(self, stage: str, block_id: int, counts: Mapping[str, Any] | None = None, *,
                  seconds: float = 0.0, worker: str = "", attempts: int = 1) -> None:
        """Ledger row ``done`` for a block of a stage that writes no graph rows (predict, paint, ...)."""
        counts_json = json_counts(counts)

        def work() -> None:
            with self.db.transaction() as cur:
                self._upsert_ledger(cur, stage, block_id, STATUS_DONE, worker, seconds, attempts, counts_json, "")
        self.db.retrying(work, f"marking block {block_id} of stage {stage} done")

    def mark_failed(self, stage: str, block_id: int, error: str, attempts: int, *, seconds: float = 0.0,
                    worker: str = "") -> None:
        """Ledger row ``failed`` with the error text; never overwrites a ``done`` row (a late duplicate
        attempt must not hide a success). The block's graph rows are left as they were."""
        def work() -> None:
            with self.db.transaction() as cur:
                self._upsert_ledger(cur, stage, block_id, STATUS_FAILED, worker, seconds, attempts, "{}",
                                    str(error)[:4000], keep_done=True)
        self.db.retrying(work, f"marking block {block_id} of stage {stage} failed")

    def reset_blocks(self, stage: str, block_ids: Iterable[int] | None = None) -> None:
        """Forget the ledger rows of ``stage`` (all, or ``block_ids``) so they run again (``--redo``)."""
        def work() -> None:
            with self.db.transaction() as cur:
                if block_ids is None:
                    cur.execute("DELETE FROM blocks WHERE stage = ?", (stage,))
                else:
                    cur.executemany("DELETE FROM blocks WHERE stage = ? AND block = ?",
                                    [(stage, int(b)) for b in block_ids])
        self.db.retrying(work, f"resetting the ledger of stage {stage}")

    def done_blocks(self, stage: str) -> set[int]:
        """Ids of the blocks of ``stage`` whose ledger row says done (one query)."""
        rows = self.db.execute("SELECT block FROM blocks WHERE stage = ? AND status = ?", (stage, STATUS_DONE))
        return {int(r[0]) for r in rows}

    def ledger_rows(self, stage: str | None = None) -> list[LedgerRow]:
        """Ledger rows, ordered by stage and block."""
        sql = ("SELECT stage, block, status, worker, seconds, attempts, counts, error, updated FROM blocks"
               + (" WHERE stage = ?" if stage is not None else "") + " ORDER BY stage, block")
        rows = self.db.execute(sql, (stage,) if stage is not None else ())
        return [LedgerRow(r[0], int(r[1]), r[2], r[3], float(r[4]), int(r[5]), json.loads(r[6]), r[7], r[8])
                for r in rows]

    def ledger_summary(self, stage: str) -> dict[str, Any]:
        """Per-status block counts, total block seconds and summed counts of ``stage``'s ledger."""
        rows = self.db.execute("SELECT status, count(*), sum(seconds) FROM blocks WHERE stage = ? GROUP BY status",
                               (stage,))
        by_status = {r[0]: int(r[1]) for r in rows}
        totals: dict[str, float] = {}
        for row in self.ledger_rows(stage):
            if row.status == STATUS_DONE:
                for key, value in row.counts.items():
                    if isinstance(value, (int, float)) and not isinstance(value, bool):
                        totals[key] = totals.get(key, 0) + value
        return {"stage": stage, "done": by_status.get(STATUS_DONE, 0), "failed": by_status.get(STATUS_FAILED, 0),
                "pending": by_status.get(STATUS_PENDING, 0), "block_seconds": float(sum(r[2] or 0 for r in rows)),
                "counts": totals}

    def stages(self) -> list[str]:
        return [r[0] for r in self.db.execute("SELECT DISTINCT stage FROM blocks ORDER BY stage")]

    # -- sizes ---------------------------------------------------------------------------------------------------

    def table_rows(self) -> dict[str, int]:
        """Rows of every graph table (for benchmarks and ``status``)."""
        return {t: self._count(f"SELECT count(*) FROM {t}") for t in GRAPH_TABLES}

    def block_range(self, table: str = "edges") -> tuple[int, int] | None:
        """Smallest and largest block id with rows in ``table`` (edges or links), or None when it is empty."""
        if table not in ("edges", "links"):
            raise ValueError(f"table must be edges or links, got {table!r}")
        lo, hi = self.db.execute(f"SELECT min(block), max(block) FROM {table}")[0]
        return None if lo is None else (int(lo), int(hi))

    # -- the fragment graph ------------------------------------------------------------------------------------

    def num_fragments(self) -> int:
        return self._count("SELECT count(*) FROM fragments")

    def num_edges(self, min_weight: float | None = None) -> int:
        if min_weight is None:
            return self._count("SELECT count(*) FROM edges")
        return self._count("SELECT count(*) FROM edges WHERE weight > ?", (float(min_weight),))

    def iter_edges(self, batch_size: int = _DEFAULT_BATCH, min_weight: float | None = None, *,
                   blocks: tuple[int, int] | None = None, tier: int | None = None) -> Iterator[EdgeBatch]:
        """Stream edges in batches of at most ``batch_size`` rows.

        Parameters
        ----------
        min_weight : float, optional
            Only edges with ``weight > min_weight`` (a positive comparison: nothing NaN-like ever passes).
        blocks : (first, stop), optional
            Only edges written by blocks ``first <= block < stop`` (leaves of the hierarchical reduction).
        tier : 1 or 2, optional
            Only tier-1 edges (``count > 0``: primary consensus) or tier-2 edges (``count < 0``: fallback).
        """
        where, params = [], []
        if min_weight is not None:
            where.append("weight > ?")
            params.append(float(min_weight))
        if tier is not None:
            if tier not in (1, 2):
                raise ValueError(f"tier must be 1 or 2, got {tier!r}")
            where.append("count > 0" if tier == 1 else "count < 0")
        if blocks is not None:
            where.append("block >= ? AND block < ?")
            params += [int(blocks[0]), int(blocks[1])]
        sql = "SELECT rowid, u, v, weight, count FROM edges" + (" WHERE " + " AND ".join(where) if where else "")
        for arr in self._stream(sql, tuple(params), batch_size, EDGE_DTYPE, "rowid"):
            yield EdgeBatch(arr["u"].copy(), arr["v"].copy(), arr["weight"].copy(), arr["count"].copy())

    def iter_fragments(self, batch_size: int = _DEFAULT_BATCH) -> Iterator[np.ndarray]:
        """Stream fragments as :data:`FRAGMENT_DTYPE` arrays of at most ``batch_size`` rows."""
        yield from self._stream("SELECT rowid, id, z, y, x, size FROM fragments", (), batch_size, FRAGMENT_DTYPE,
                                "rowid")

    def fragment_ids(self, batch_size: int = _DEFAULT_BATCH) -> np.ndarray:
        """All fragment ids, sorted ascending (int64; 8 bytes per fragment)."""
        parts = [batch["id"] for batch in self.iter_fragments(batch_size)]
        ids = np.concatenate(parts) if parts else np.zeros(0, np.int64)
        ids.sort()
        return ids

    def write_lut(self, fragments: np.ndarray, segments: np.ndarray) -> None:
        """Replace the whole LUT with ``fragments -> segments`` (int64 arrays) in one transaction."""
        frag = _as_ids(fragments, "LUT fragment id", None)
        seg = _as_ids(segments, "LUT segment id", None)
        if len(frag) != len(seg):
            raise ValueError(f"fragments ({len(frag)}) and segments ({len(seg)}) differ in length")
        self._write("writing the LUT", [("DELETE FROM lut", ())],
                    [("lut", [("fragment", "i8", frag), ("segment", "i8", seg)])])

    def iter_lut(self, batch_size: int = _DEFAULT_BATCH) -> Iterator[tuple[np.ndarray, np.ndarray]]:
        dtype = np.dtype([("fragment", "<i8"), ("segment", "<i8")])
        for arr in self._stream("SELECT rowid, fragment, segment FROM lut", (), batch_size, dtype, "rowid"):
            yield arr["fragment"].copy(), arr["segment"].copy()

    def read_lut(self) -> tuple[np.ndarray, np.ndarray]:
        """The LUT as ``(fragments, segments)``, sorted by fragment."""
        parts = list(self.iter_lut())
        if not parts:
            return np.zeros(0, np.int64), np.zeros(0, np.int64)
        frag = np.concatenate([p[0] for p in parts])
        seg = np.concatenate([p[1] for p in parts])
        order = np.argsort(frag, kind="stable")
        return frag[order], seg[order]

    # -- the contracted graph and its agglomeration -------------------------------------------------------------

    def num_clusters(self) -> int:
        return self._count("SELECT count(*) FROM clusters")

    def num_links(self, kind: int | None = None) -> int:
        if kind is None:
            return self._count("SELECT count(*) FROM links")
        return self._count("SELECT count(*) FROM links WHERE kind = ?", (int(kind),))

    def block_rows(self, block_id: int) -> dict[str, np.ndarray]:
        """The contracted-graph rows one block wrote: clusters by id, patch_map by patch, links by (u, v)."""
        out = {}
        for table, dtype, order in (("clusters", CLUSTER_DTYPE, "id"), ("patch_map", MAP_DTYPE, "patch"),
                                    ("links", LINK_DTYPE, "u, v")):
            names = ", ".join(dtype.names or ())
            rows = self.db.execute(f"SELECT {names} FROM {table} WHERE block = ? ORDER BY {order}", (int(block_id),))
            out[table] = np.array([tuple(r) for r in rows], dtype=dtype)
        return out

    def iter_attract_pairs(self, blocks: tuple[int, int], batch_size: int = _DEFAULT_BATCH
                           ) -> Iterator[tuple[np.ndarray, np.ndarray]]:
        """Cluster pairs of the cross-block attractive links written by blocks ``first <= block < stop``,
        the foreign end resolved through its block's map (phase 1 of the stitch)."""
        dtype = np.dtype([("a", "<i8"), ("b", "<i8"), ("v", "<i8")])
        sql = ("SELECT l.rowid, l.a, COALESCE(m.cluster, 0), l.v FROM links l LEFT JOIN patch_map m ON "
               "m.patch = l.v WHERE l.kind = ? AND l.block >= ? AND l.block < ?")
        for arr in self._stream(sql, (ATTRACT, int(blocks[0]), int(blocks[1])), batch_size, dtype, "l.rowid"):
            missing = arr["b"] == 0
            if missing.any():
                raise _unresolved(int(arr["v"][np.argmax(missing)]), self.where)
            yield arr["a"].copy(), arr["b"].copy()

    def write_segments(self, clusters: np.ndarray, segments: np.ndarray) -> None:
        """Phase 1's result: replace the ``segments`` table (only clusters whose segment is another cluster)."""
        keep = np.asarray(clusters) != np.asarray(segments)
        self._write("writing the segments", [("DELETE FROM segments", ())],
                    [("segments", [("cluster", "i8", np.asarray(clusters, np.int64)[keep]),
                                   ("segment", "i8", np.asarray(segments, np.int64)[keep])])])

    def _segmented(self, kind: int) -> np.ndarray:
        dtype = np.dtype([("sa", "<i8"), ("sb", "<i8"), ("u", "<i8"), ("v", "<i8"), ("weight", "<f8")])
        rows = np.array(self.db.execute(_SEGMENTED, (int(kind),)), dtype=dtype)
        if len(rows) and (rows["sb"] == 0).any():
            raise _unresolved(int(rows["v"][np.argmax(rows["sb"] == 0)]), self.where)
        return rows

    def tier2_links(self) -> Tier2Batch:
        """Every tier-2 link, both ends as phase-1 segments (links inside one segment dropped); no mutexes."""
        t2 = self._segmented(TIER2)
        t2 = t2[t2["sa"] != t2["sb"]]
        empty = np.zeros(0, np.int64)
        return Tier2Batch(t2["sa"], t2["sb"], t2["u"], t2["v"], t2["weight"], empty, empty)

    def write_tier2_groups(self, segments: np.ndarray, groups: np.ndarray) -> None:
        """Replace the phase-2 groups (segment -> group 0..G-1) and clear the old phase-2 roots."""
        self._write("writing the tier-2 groups", [("DELETE FROM tier2_groups", ()), ("DELETE FROM tier2_roots", ())],
                    [("tier2_groups", [("segment", "i8", np.asarray(segments, np.int64)),
                                       ("grp", "i8", np.asarray(groups, np.int64))])])

    def tier2_batch(self, first: int, stop: int) -> Tier2Batch:
        """Tier-2 links and mutexes of groups ``first <= grp < stop`` (ends as phase-1 segments)."""
        dtype = np.dtype([("sa", "<i8"), ("sb", "<i8"), ("u", "<i8"), ("v", "<i8"), ("weight", "<f8")])
        group_of = ("SELECT t.sa, t.sb, t.u, t.v, t.weight FROM (" + _SEGMENTED + ") t JOIN tier2_groups ga ON "
                    "ga.segment = t.sa JOIN tier2_groups gb ON gb.segment = t.sb WHERE ga.grp = gb.grp AND "
                    "ga.grp >= ? AND ga.grp < ? AND t.sa <> t.sb")
        t2 = np.array(self.db.execute(group_of, (TIER2, int(first), int(stop))), dtype=dtype)
        mx = np.array(self.db.execute(group_of, (MUTEX, int(first), int(stop))), dtype=dtype)
        return Tier2Batch(t2["sa"], t2["sb"], t2["u"], t2["v"], t2["weight"], mx["sa"], mx["sb"])

    def write_tier2_roots(self, segments: np.ndarray, roots: np.ndarray) -> None:
        """Add phase 2's result for some groups (segments whose root is another segment)."""
        keep = np.asarray(segments) != np.asarray(roots)
        self._write("writing the tier-2 roots", [],
                    [("tier2_roots", [("segment", "i8", np.asarray(segments, np.int64)[keep]),
                                      ("root", "i8", np.asarray(roots, np.int64)[keep])])])

    def build_instances(self) -> int:
        """Final ids of every cluster: the rank of its instance's smallest cluster id (= smallest patch id),
        computed by the database; returns the number of instances."""
        sql = ("INSERT INTO instances (cluster, block, instance) WITH f AS (SELECT c.id AS cluster, c.block AS block, "
               "COALESCE(t.root, COALESCE(s.segment, c.id)) AS root FROM clusters c LEFT JOIN segments s ON "
               "s.cluster = c.id LEFT JOIN tier2_roots t ON t.segment = COALESCE(s.segment, c.id)), "
               "r AS (SELECT root, ROW_NUMBER() OVER (ORDER BY root) AS rank FROM (SELECT DISTINCT root FROM f) d) "
               "SELECT f.cluster, f.block, r.rank FROM f JOIN r ON r.root = f.root")
        self._write("numbering the instances", [("DELETE FROM instances", ()), (sql, ())])
        return self._count("SELECT max(instance) FROM instances")

    def write_instances(self, clusters: np.ndarray, instances: np.ndarray) -> None:
        """Replace the instances table with ``clusters -> instances`` (the mutex watershed's result)."""
        c = _as_ids(clusters, "cluster id", None)
        blocks = np.array(self.db.execute("SELECT id, block FROM clusters ORDER BY id"), dtype=np.int64).reshape(-1, 2)
        pos = np.searchsorted(blocks[:, 0], c) if len(blocks) else np.zeros(len(c), np.int64)
        if len(c) and (pos.max() >= len(blocks) or (blocks[pos, 0] != c).any()):
            raise ValueError("write_instances: a cluster id is not in the clusters table")
        self._write("writing the instances", [("DELETE FROM instances", ())],
                    [("instances", [("cluster", "i8", c), ("block", "i8", blocks[pos, 1] if len(c) else c),
                                    ("instance", "i8", _as_ids(instances, "instance id", None))])])

    def num_instances(self) -> int:
        return self._count("SELECT max(instance) FROM instances")

    def instances_of_blocks(self, blocks: Sequence[int]) -> tuple[np.ndarray, np.ndarray]:
        """``(clusters, instances)`` of the clusters of vote ``blocks`` (a slice of the table), by cluster."""
        blocks = [int(b) for b in blocks]
        if not blocks:
            return np.zeros(0, np.int64), np.zeros(0, np.int64)
        marks = ", ".join("?" * len(blocks))
        rows = np.array(self.db.execute(f"SELECT cluster, instance FROM instances WHERE block IN ({marks}) "
                                        "ORDER BY cluster", blocks), dtype=np.int64).reshape(-1, 2)
        return rows[:, 0].copy(), rows[:, 1].copy()

    def cluster_ids(self) -> np.ndarray:
        """All cluster ids, ascending (the mutex watershed's nodes: there every cluster is one patch)."""
        dtype = np.dtype([("id", "<i8")])
        parts = [a["id"] for a in self._stream("SELECT rowid, id FROM clusters", (), _DEFAULT_BATCH, dtype, "rowid")]
        ids = np.concatenate(parts) if parts else np.zeros(0, np.int64)
        ids.sort()
        return ids


__all__ = ["CLUSTER_DTYPE", "EDGE_DTYPE", "FRAGMENT_DTYPE", "GRAPH_TABLES", "LINK_DTYPE", "MAP_DTYPE", "EdgeBatch",
           "GraphStore", "LedgerRow", "STATUS_DONE", "STATUS_FAILED", "Tier2Batch", "make_clusters",
           "make_edges", "make_fragments", "make_map"]
