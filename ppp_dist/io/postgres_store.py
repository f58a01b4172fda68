"""The PostgreSQL backend of :class:`~ppp_dist.io.graph_store.GraphStore`: binary ``COPY`` inserts (built with
NumPy, no per-row Python) and server-side cursors for reads."""

from __future__ import annotations

import io
import struct
import uuid
from collections.abc import Iterator, Sequence
from typing import Any

import numpy as np

from ppp_dist.io.graph_store import GraphStore

# binary COPY: every row is an int16 field count, then per field an int32 length and the big-endian value
_PG_TYPES = {"i8": ">i8", "i4": ">i4", "f8": ">f8"}
_PG_HEADER = b"PGCOPY\n\xff\r\n\x00" + struct.pack(">ii", 0, 0)
_PG_TRAILER = struct.pack(">h", -1)


class PostgresGraphStore(GraphStore):
    """A :class:`GraphStore` on a PostgreSQL server (many concurrent writers)."""

    def _insert(self, cur: Any, table: str, columns: Sequence[tuple[str, str, np.ndarray]]) -> None:
        # table and column names come from graph_store's fixed lists, never from callers
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

    def _stream(self, select: str, params: tuple, batch_size: int, dtype: np.dtype, key: str) -> Iterator[np.ndarray]:
        """Rows of ``select`` through a server-side (named) cursor in one read transaction; PostgreSQL has no
        rowid, so the key column is replaced by a constant and dropped."""
        if batch_size < 1:
            raise ValueError(f"batch_size must be >= 1, got {batch_size}")
        head, rest = select.split(key, 1)
        sql = self.db._sql(f"{head}0{rest}")
        assert dtype.names is not None and dtype.fields is not None  # structured row dtypes
        names, fields = dtype.names, dtype.fields
        key_dtype = np.dtype([("_key", np.dtype("<i8")), *[(n, fields[n][0]) for n in names]])
        conn = self.db.connection
        cur = conn.cursor(name=f"ppp_{uuid.uuid4().hex[:12]}")
        cur.itersize = batch_size
        try:
            cur.execute(sql, params)
            while True:
                rows = cur.fetchmany(batch_size)
                if not rows:
                    break
                arr = np.array(rows, dtype=key_dtype)
                out = np.empty(len(arr), dtype)
                for name in names:
                    out[name] = arr[name]
                yield out
        finally:
            cur.close()
            conn.commit()


__all__ = ["PostgresGraphStore"]
