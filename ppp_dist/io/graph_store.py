"""The fragment graph and the block ledger in the run database (SQLite or PostgreSQL), one interface.

Blocks write their fragments and the edges they own with :meth:`GraphStore.write_block`: fragments, edges
and the block's ledger row go in ONE transaction that first deletes whatever the block wrote before, so a
block that is retried, re-run with other parameters or run twice by dask leaves exactly one copy of its
rows and never "fragments without their edges". Reads stream in batches of NumPy arrays
(:meth:`GraphStore.iter_edges`, :meth:`GraphStore.iter_fragments`) so that no global graph object is
ever built in Python.

Ids are signed 64-bit in SQL: fragment ids must lie in ``[1, 2**63)`` (0 is background), and uint64 input
beyond that range is refused with a message rather than wrapped. Edge weights must not be NaN (a NaN
compares false and would silently decide merges); each edge is stored once with ``u < v`` (inputs with
``u > v`` are swapped) and belongs to the block that wrote it.

Bulk paths: SQLite ``executemany`` inside one ``BEGIN IMMEDIATE`` transaction, retried with backoff on
"database is locked"; PostgreSQL binary ``COPY`` (built with NumPy, no per-row Python) and server-side
cursors for reads.

Examples
--------
>>> from ppp_dist.config import DatabaseConfig
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
import io
import json
import logging
import struct
import uuid
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, NamedTuple

import numpy as np

from ppp_dist.config import DatabaseConfig
from ppp_dist.errors import BlockError, DatabaseError
from ppp_dist.io.database import Database, open_database

logger = logging.getLogger(__name__)

FRAGMENT_DTYPE = np.dtype([("id", "<i8"), ("z", "<i4"), ("y", "<i4"), ("x", "<i4"), ("size", "<i8")])
"""One row per fragment: global id, anchor voxel (z, y, x) in volume coordinates, size in voxels."""
EDGE_DTYPE = np.dtype([("u", "<i8"), ("v", "<i8"), ("weight", "<f8"), ("count", "<i8")])
"""One row per edge: endpoint ids, weight (merge evidence, higher = more likely the same object), count
(how many patch pairs or contacts support it)."""

STATUS_DONE, STATUS_FAILED, STATUS_PENDING = "done", "failed", "pending"
_INT64_MAX = np.iinfo(np.int64).max
_DEFAULT_BATCH = 100_000


class EdgeBatch(NamedTuple):
    """A batch of edges as arrays: ``u``, ``v`` int64 (``u < v``), ``weight`` float64, ``count`` int64."""

    u: np.ndarray
    v: np.ndarray
    weight: np.ndarray
    count: np.ndarray


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


def _now() -> str:
    return _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="milliseconds")


def _as_ids(values: Any, what: str, block_id: int | None) -> np.ndarray:
    """``values`` as int64, refusing floats, uint64 beyond 2**63 - 1, and ids < 1."""
    arr = np.asarray(values)
    if arr.size == 0:
        return np.zeros(0, np.int64)
    arr = arr.ravel()
    if arr.dtype.kind not in "ui":
        raise _data_error(block_id, f"{what} must be integers, got dtype {arr.dtype}")
    if arr.dtype.kind == "u" and int(arr.max()) > _INT64_MAX:
        raise _data_error(block_id, f"{what} {int(arr.max())} does not fit a signed 64-bit SQL id (max 2**63 - 1); "
                                    "use ids below 2**63 (e.g. fewer bits for the block part of the id)")
    arr = arr.astype(np.int64, copy=False)
    if int(arr.min()) < 1:
        raise _data_error(block_id, f"{what} {int(arr.min())} is not a fragment id; ids must be >= 1 "
                                    "(0 is background)")
    return arr


def _data_error(block_id: int | None, reason: str) -> Exception:
    return BlockError(block_id, reason) if block_id is not None else ValueError(reason)


def make_fragments(ids: Any, positions: Any = None, sizes: Any = None) -> np.ndarray:
    """Build a fragment table (structured array of :data:`FRAGMENT_DTYPE`).

    Parameters
    ----------
    ids : (N,) integer array
        Global fragment ids in ``[1, 2**63)``.
    positions : (N, 3) integer array, optional
        Anchor voxel ``(z, y, x)`` of each fragment (2D data: z = 0); default zeros.
    sizes : (N,) integer array, optional
        Voxels (or patches) per fragment; default zeros.
    """
    ids_arr = _as_ids(ids, "fragment id", None)
    out = np.zeros(len(ids_arr), FRAGMENT_DTYPE)
    out["id"] = ids_arr
    if positions is not None:
        pos = np.asarray(positions, dtype=np.int64).reshape(len(ids_arr), -1)
        if pos.shape[1] != 3:
            raise ValueError(f"positions must have shape (N, 3) (z, y, x), got {pos.shape}")
        out["z"], out["y"], out["x"] = pos[:, 0], pos[:, 1], pos[:, 2]
    if sizes is not None:
        out["size"] = np.asarray(sizes, dtype=np.int64).reshape(len(ids_arr))
    return out


def make_edges(u: Any, v: Any, weight: Any, count: Any = None) -> np.ndarray:
    """Build an edge table (structured array of :data:`EDGE_DTYPE`); ``count`` defaults to 1."""
    u_arr, v_arr = np.asarray(u).ravel(), np.asarray(v).ravel()
    w_arr = np.asarray(weight, dtype=np.float64).ravel()
    if not len(u_arr) == len(v_arr) == len(w_arr):
        raise ValueError(f"u, v and weight differ in length: {len(u_arr)}, {len(v_arr)}, {len(w_arr)}")
    out = np.zeros(len(u_arr), EDGE_DTYPE)
    out["u"], out["v"] = _as_ids(u_arr, "edge endpoint", None), _as_ids(v_arr, "edge endpoint", None)
    out["weight"] = w_arr
    out["count"] = 1 if count is None else np.asarray(count, dtype=np.int64).ravel()
    return out


def _field(table: Any, name: str, n: int, default: Any, alt: str | None = None) -> np.ndarray:
    if isinstance(table, np.ndarray) and table.dtype.names:
        if name in table.dtype.names:
            return np.asarray(table[name])
        if alt is not None and alt in table.dtype.names:
            return np.asarray(table[alt])
    elif isinstance(table, Mapping):
        if name in table:
            return np.asarray(table[name])
        if alt is not None and alt in table:
            return np.asarray(table[alt])
    if default is None:
        raise ValueError(f"the table has no field {name!r}")
    return np.full(n, default)


def _normalise_fragments(fragments: Any, block_id: int) -> np.ndarray:
    """A validated :data:`FRAGMENT_DTYPE` array from a structured array or a mapping of columns."""
    if fragments is None:
        return np.zeros(0, FRAGMENT_DTYPE)
    if not ((isinstance(fragments, np.ndarray) and fragments.dtype.names) or isinstance(fragments, Mapping)):
        raise BlockError(block_id, "fragments must be a structured array (see make_fragments) or a mapping "
                                   f"of columns, got {type(fragments).__name__}")
    ids = _field(fragments, "id", 0, None)
    out = np.zeros(len(ids), FRAGMENT_DTYPE)
    out["id"] = _as_ids(ids, "fragment id", block_id)
    if isinstance(fragments, Mapping) and "position" in fragments:
        pos = np.asarray(fragments["position"], dtype=np.int64).reshape(len(out), 3)
        out["z"], out["y"], out["x"] = pos[:, 0], pos[:, 1], pos[:, 2]
    else:
        for axis in ("z", "y", "x"):
            out[axis] = _field(fragments, axis, len(out), 0)
    out["size"] = _field(fragments, "size", len(out), 0)
    if len(out) > 1:
        ordered = np.sort(out["id"])
        dup = ordered[1:][ordered[1:] == ordered[:-1]]
        if dup.size:
            raise BlockError(block_id, f"fragment id {int(dup[0])} appears twice in the block's fragments")
    return out


def _normalise_edges(edges: Any, block_id: int) -> np.ndarray:
    """A validated :data:`EDGE_DTYPE` array with ``u < v``: no NaN weights, no self-loops, no duplicates."""
    if edges is None:
        return np.zeros(0, EDGE_DTYPE)
    if not ((isinstance(edges, np.ndarray) and edges.dtype.names) or isinstance(edges, Mapping)):
        raise BlockError(block_id, "edges must be a structured array (see make_edges) or a mapping of columns, "
                                   f"got {type(edges).__name__}")
    u = _as_ids(_field(edges, "u", 0, None), "edge endpoint u", block_id)
    v = _as_ids(_field(edges, "v", 0, None), "edge endpoint v", block_id)
    w = np.asarray(_field(edges, "weight", len(u), None, alt="score"), dtype=np.float64).ravel()
    if not len(u) == len(v) == len(w):
        raise BlockError(block_id, f"edge columns differ in length: u {len(u)}, v {len(v)}, weight {len(w)}")
    nan = np.isnan(w)
    if nan.any():
        k = int(np.argmax(nan))
        raise BlockError(block_id, f"{int(nan.sum())} edge weights are NaN (first: edge {int(u[k])}-{int(v[k])}); "
                                   "NaN scores would decide merges silently — fix the scores upstream (NaN "
                                   "predictions?) or drop those edges")
    out = np.zeros(len(u), EDGE_DTYPE)
    out["u"], out["v"] = np.minimum(u, v), np.maximum(u, v)
    out["weight"] = w
    out["count"] = _field(edges, "count", len(u), 1)
    loops = out["u"] == out["v"]
    if loops.any():
        raise BlockError(block_id, f"edge {int(out['u'][np.argmax(loops)])}-{int(out['u'][np.argmax(loops)])} "
                                   "joins a fragment to itself; drop self-loops before writing")
    if len(out) > 1:
        order = np.lexsort((out["v"], out["u"]))
        su, sv = out["u"][order], out["v"][order]
        dup = (su[1:] == su[:-1]) & (sv[1:] == sv[:-1])
        if dup.any():
            k = int(np.argmax(dup))
            raise BlockError(block_id, f"edge {int(su[k])}-{int(sv[k])} appears twice in the block's edges "
                                       "(as (u, v) or (v, u)); sum their counts into one row")
    return out


def _json_counts(counts: Mapping[str, Any] | None) -> str:
    def convert(value: Any) -> Any:
        if isinstance(value, np.generic):
            return value.item()
        if isinstance(value, np.ndarray):
            return value.tolist()
        raise TypeError(f"counts value {value!r} of type {type(value).__name__} is not JSON")
    return json.dumps(dict(counts or {}), default=convert, sort_keys=True)


# ---------------------------------------------------------------------------------------------------------
# PostgreSQL binary COPY: every row is int16 field count, then per field int32 length + big-endian value.

_PG_TYPES = {"i8": ">i8", "i4": ">i4", "f8": ">f8"}
_PG_HEADER = b"PGCOPY\n\xff\r\n\x00" + struct.pack(">ii", 0, 0)
_PG_TRAILER = struct.pack(">h", -1)


def _pg_copy(cur: Any, table: str, columns: Sequence[tuple[str, str, np.ndarray]]) -> None:
    """COPY the equally long ``columns`` [(name, "i8"|"i4"|"f8", values)] into ``table`` in binary format."""
    n = len(columns[0][2])
    if n == 0:
        return
    fields: list[tuple[str, str]] = [("nfields", ">i2")]
    for k, (_, kind, _) in enumerate(columns):
        fields += [(f"len{k}", ">i4"), (f"val{k}", _PG_TYPES[kind])]
    rows = np.empty(n, dtype=np.dtype(fields))
    rows["nfields"] = len(columns)
    for k, (_, kind, values) in enumerate(columns):
        rows[f"len{k}"] = int(kind[1])
        rows[f"val{k}"] = values
    buf = io.BytesIO(_PG_HEADER + rows.tobytes() + _PG_TRAILER)
    names = ", ".join(name for name, _, _ in columns)
    cur.raw.copy_expert(f"COPY {table} ({names}) FROM STDIN WITH (FORMAT binary)", buf)


def _insert(db: Database, cur: Any, table: str, columns: Sequence[tuple[str, str, np.ndarray]]) -> None:
    """Bulk insert of column arrays: binary COPY on PostgreSQL, executemany on SQLite.

    ``table`` and the column names come from this module's fixed lists, never from callers.
    """
    if len(columns[0][2]) == 0:
        return
    if db.backend == "postgres":
        _pg_copy(cur, table, columns)
        return
    names = ", ".join(name for name, _, _ in columns)
    marks = ", ".join("?" for _ in columns)
    cur.executemany(f"INSERT INTO {table} ({names}) VALUES ({marks})",
                    zip(*(values.tolist() for _, _, values in columns)))


class GraphStore:
    """Fragments, edges, the LUT and the block ledger of one run database.

    Make one with :func:`open_graph_store` (or a :class:`StoreFactory` on workers). A store holds one
    connection and is not thread-safe: one per process (worker) — see :func:`ppp_dist.runner.worker_store`.
    """

    def __init__(self, db: Database) -> None:
        self.db = db

    @property
    def backend(self) -> str:
        return self.db.backend

    @property
    def where(self) -> str:
        return self.db.where

    def close(self) -> None:
        self.db.close()

    def __enter__(self) -> "GraphStore":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # -- writing blocks ----------------------------------------------------------------------------------

    def write_block(self, stage: str, block_id: int, fragments: Any = None, edges: Any = None,
                    counts: Mapping[str, Any] | None = None, *, seconds: float = 0.0, worker: str = "",
                    attempts: int = 1) -> None:
        """Replace the block's fragments and edges and mark it done in the ledger, in one transaction.

        Parameters
        ----------
        stage : str
            Ledger stage name (e.g. ``"vote"``).
        block_id : int
            The block writing; every fragment and edge row is tagged with it and deleted on a re-write.
        fragments : structured array or mapping, optional
            Fields ``id`` (required), ``z``, ``y``, ``x`` (or ``position`` (N, 3)), ``size``; see
            :func:`make_fragments`. Ids in ``[1, 2**63)``, unique.
        edges : structured array or mapping, optional
            Fields ``u``, ``v``, ``weight`` (required, no NaN), ``count`` (default 1); see
            :func:`make_edges`. Each unordered pair at most once; stored with ``u < v``.
        counts : dict, optional
            Small JSON-able numbers for the ledger (``fragments`` and ``edges`` are added).

        Raises
        ------
        BlockError
            Invalid ids, NaN weights, duplicates, or an id/edge another block has already stored.
        DatabaseError
            The database stayed locked longer than the retry budget.
        """
        block_id = int(block_id)
        frags = _normalise_fragments(fragments, block_id)
        edge_rows = _normalise_edges(edges, block_id)
        all_counts = {"fragments": len(frags), "edges": len(edge_rows), **dict(counts or {})}
        counts_json = _json_counts(all_counts)
        block_col_f = np.full(len(frags), block_id, np.int64)
        block_col_e = np.full(len(edge_rows), block_id, np.int64)

        def work() -> None:
            with self.db.transaction() as cur:
                cur.execute("DELETE FROM edges WHERE block = ?", (block_id,))
                cur.execute("DELETE FROM fragments WHERE block = ?", (block_id,))
                _insert(self.db, cur, "fragments", [
                    ("id", "i8", frags["id"]), ("block", "i8", block_col_f), ("z", "i4", frags["z"]),
                    ("y", "i4", frags["y"]), ("x", "i4", frags["x"]), ("size", "i8", frags["size"])])
                _insert(self.db, cur, "edges", [
                    ("u", "i8", edge_rows["u"]), ("v", "i8", edge_rows["v"]), ("weight", "f8", edge_rows["weight"]),
                    ("count", "i8", edge_rows["count"]), ("block", "i8", block_col_e)])
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

    # -- the ledger --------------------------------------------------------------------------------------

    def mark_done(self, stage: str, block_id: int, counts: Mapping[str, Any] | None = None, *,
                  seconds: float = 0.0, worker: str = "", attempts: int = 1) -> None:
        """Ledger row ``done`` for a block of a stage that writes no graph rows (predict, paint, ...)."""
        counts_json = _json_counts(counts)

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

    # -- reading the graph ---------------------------------------------------------------------------------

    def num_fragments(self) -> int:
        return int(self.db.execute("SELECT count(*) FROM fragments")[0][0])

    def num_edges(self, min_weight: float | None = None) -> int:
        if min_weight is None:
            return int(self.db.execute("SELECT count(*) FROM edges")[0][0])
        return int(self.db.execute("SELECT count(*) FROM edges WHERE weight > ?", (float(min_weight),))[0][0])

    def _stream(self, columns: str, table: str, where: str, params: tuple, batch_size: int,
                dtype: np.dtype) -> Iterator[np.ndarray]:
        """Rows of ``table`` in batches as structured arrays, without holding the table in memory.

        PostgreSQL: a server-side (named) cursor in one read transaction. SQLite: keyset pagination on
        rowid (each page is a short read transaction, so writers and WAL checkpoints are never blocked
        for long); run this when the stage that writes the table has finished.
        """
        if batch_size < 1:
            raise ValueError(f"batch_size must be >= 1, got {batch_size}")
        if self.backend == "postgres":
            conn = self.db.connection
            cur = conn.cursor(name=f"ppp_{table}_{uuid.uuid4().hex[:8]}")
            cur.itersize = batch_size
            try:
                cur.execute(self.db._sql(f"SELECT {columns} FROM {table}" + (f" WHERE {where}" if where else "")),
                            params)
                while True:
                    rows = cur.fetchmany(batch_size)
                    if not rows:
                        break
                    yield np.array(rows, dtype=dtype)
            finally:
                cur.close()
                conn.commit()
            return
        last = -(2 ** 63)
        key_dtype = np.dtype([("rowid", "<i8")] + [(n, dtype.fields[n][0]) for n in dtype.names])
        sql = (f"SELECT rowid, {columns} FROM {table} WHERE rowid > ?" + (f" AND {where}" if where else "")
               + " ORDER BY rowid LIMIT ?")
        while True:
            rows = self.db.execute(sql, (last, *params, batch_size))
            if not rows:
                return
            arr = np.array(rows, dtype=key_dtype)
            last = int(arr["rowid"][-1])
            out = np.empty(len(arr), dtype)
            for name in dtype.names:
                out[name] = arr[name]
            yield out
            if len(rows) < batch_size:
                return

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
        for arr in self._stream("u, v, weight, count", "edges", " AND ".join(where), tuple(params),
                                batch_size, EDGE_DTYPE):
            yield EdgeBatch(arr["u"].copy(), arr["v"].copy(), arr["weight"].copy(), arr["count"].copy())

    def iter_fragments(self, batch_size: int = _DEFAULT_BATCH) -> Iterator[np.ndarray]:
        """Stream fragments as :data:`FRAGMENT_DTYPE` arrays of at most ``batch_size`` rows."""
        yield from self._stream("id, z, y, x, size", "fragments", "", (), batch_size, FRAGMENT_DTYPE)

    def fragment_ids(self, batch_size: int = _DEFAULT_BATCH) -> np.ndarray:
        """All fragment ids, sorted ascending (int64; 8 bytes per fragment)."""
        parts = [batch["id"] for batch in self.iter_fragments(batch_size)]
        ids = np.concatenate(parts) if parts else np.zeros(0, np.int64)
        ids.sort()
        return ids

    # -- the fragment -> segment look-up table ---------------------------------------------------------------

    def write_lut(self, fragments: np.ndarray, segments: np.ndarray) -> None:
        """Replace the whole LUT with ``fragments -> segments`` (int64 arrays) in one transaction."""
        frag = _as_ids(fragments, "LUT fragment id", None)
        seg = _as_ids(segments, "LUT segment id", None)
        if len(frag) != len(seg):
            raise ValueError(f"fragments ({len(frag)}) and segments ({len(seg)}) differ in length")

        def work() -> None:
            with self.db.transaction() as cur:
                cur.execute("DELETE FROM lut")
                _insert(self.db, cur, "lut", [("fragment", "i8", frag), ("segment", "i8", seg)])
        self.db.retrying(work, "writing the LUT")

    def iter_lut(self, batch_size: int = _DEFAULT_BATCH) -> Iterator[tuple[np.ndarray, np.ndarray]]:
        dtype = np.dtype([("fragment", "<i8"), ("segment", "<i8")])
        for arr in self._stream("fragment, segment", "lut", "", (), batch_size, dtype):
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


def open_graph_store(config: DatabaseConfig, experiment_dir: Path | str | None = None) -> GraphStore:
    """Open (and create if needed) the run database as a :class:`GraphStore`; see ``open_database``."""
    return GraphStore(open_database(config, experiment_dir))


@dataclass(frozen=True)
class StoreFactory:
    """A picklable recipe for a :class:`GraphStore`: what dask tasks carry instead of a connection.

    Workers turn it into one cached store per process (:func:`ppp_dist.runner.worker_store`).
    """

    config: DatabaseConfig
    experiment_dir: str | None = None

    def __call__(self) -> GraphStore:
        return open_graph_store(self.config, self.experiment_dir)


__all__ = ["EDGE_DTYPE", "FRAGMENT_DTYPE", "EdgeBatch", "GraphStore", "LedgerRow", "StoreFactory",
           "make_edges", "make_fragments", "open_graph_store", "STATUS_DONE", "STATUS_FAILED"]
