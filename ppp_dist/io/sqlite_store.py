"""The SQLite backend of :class:`~ppp_dist.io.graph_store.GraphStore`: ``executemany`` inserts and keyset
pagination (each page is a short read transaction, so writers and WAL checkpoints are never blocked long)."""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from typing import Any

import numpy as np

from ppp_dist.io.graph_store import GraphStore


class SQLiteGraphStore(GraphStore):
    """A :class:`GraphStore` on an SQLite file (one writer at a time, WAL journal)."""

    def _insert(self, cur: Any, table: str, columns: Sequence[tuple[str, str, np.ndarray]]) -> None:
        # table and column names come from graph_store's fixed lists, never from callers
        if len(columns[0][2]) == 0:
            return
        names = ", ".join(name for name, _, _ in columns)
        marks = ", ".join("?" for _ in columns)
        cur.executemany(f"INSERT INTO {table} ({names}) VALUES ({marks})",
                        zip(*(values.tolist() for _, _, values in columns)))

    def _stream(self, select: str, params: tuple, batch_size: int, dtype: np.dtype, key: str) -> Iterator[np.ndarray]:
        """Pages of ``select`` ordered by its first column ``key`` (a rowid): ``key > last`` each time."""
        if batch_size < 1:
            raise ValueError(f"batch_size must be >= 1, got {batch_size}")
        glue = " AND " if " WHERE " in select else " WHERE "
        sql = f"{select}{glue}{key} > ? ORDER BY {key} LIMIT ?"
        assert dtype.names is not None and dtype.fields is not None  # structured row dtypes
        names, fields = dtype.names, dtype.fields
        key_dtype = np.dtype([("_key", np.dtype("<i8")), *[(n, fields[n][0]) for n in names]])
        last = -(2 ** 63)
        while True:
            rows = self.db.execute(sql, (*params, last, batch_size))
            if not rows:
                return
            arr = np.array(rows, dtype=key_dtype)
            last = int(arr["_key"][-1])
            out = np.empty(len(arr), dtype)
            for name in names:
                out[name] = arr[name]
            yield out
            if len(rows) < batch_size:
                return


__all__ = ["SQLiteGraphStore"]
