"""The block ledger: which blocks of which stage are done or failed, with timings and counts.

The ledger is the ``blocks`` table of the run database (see :mod:`ppp_dist.io.database`); its rows are
written by :meth:`GraphStore.write_block` (in the same transaction as the block's graph rows — the row *is*
the done marker), :meth:`GraphStore.mark_done` (array-only stages) and :meth:`GraphStore.mark_failed`.
This module is the read/bookkeeping view used by the runner and by ``ppp-dist status``.

Examples
--------
>>> from ppp_dist.config import DatabaseConfig
>>> from ppp_dist.io.stores import open_graph_store
>>> ledger = Ledger(open_graph_store(DatabaseConfig(path=":memory:")))
>>> ledger.mark_done("predict", 0, {"voxels": 512}, seconds=2.0)
>>> ledger.mark_failed("predict", 1, "OSError: disk full", attempts=3)
>>> sorted(ledger.done_blocks("predict")), ledger.summary("predict")["failed"]
([0], 1)
>>> print(ledger.status_table())
stage    done  failed  block seconds
-------  ----  ------  -------------
predict     1       1            2.0
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from typing import Any

from ppp_dist.io.graph_store import GraphStore, LedgerRow


class Ledger:
    """Ledger operations on a :class:`GraphStore`."""

    def __init__(self, store: GraphStore) -> None:
        self.store = store

    def done_blocks(self, stage: str) -> set[int]:
        """Block ids of ``stage`` marked done (one query)."""
        return self.store.done_blocks(stage)

    def mark_done(self, stage: str, block: int, counts: Mapping[str, Any] | None = None, *, seconds: float = 0.0,
                  worker: str = "", attempts: int = 1) -> None:
        self.store.mark_done(stage, block, counts, seconds=seconds, worker=worker, attempts=attempts)

    def mark_failed(self, stage: str, block: int, error: str, attempts: int, *, seconds: float = 0.0,
                    worker: str = "") -> None:
        """Record a failure (never replaces a ``done`` row)."""
        self.store.mark_failed(stage, block, error, attempts, seconds=seconds, worker=worker)

    def reset(self, stage: str, blocks: Iterable[int] | None = None) -> None:
        """Forget ``stage``'s rows (all or ``blocks``) so they run again."""
        self.store.reset_blocks(stage, blocks)

    def rows(self, stage: str | None = None) -> list[LedgerRow]:
        return self.store.ledger_rows(stage)

    def failed(self, stage: str) -> list[LedgerRow]:
        """The failed rows of ``stage`` with their errors, by block id."""
        return [r for r in self.store.ledger_rows(stage) if r.status == "failed"]

    def summary(self, stage: str) -> dict[str, Any]:
        """``{"stage", "done", "failed", "block_seconds", "counts"}`` for ``stage``."""
        summary = self.store.ledger_summary(stage)
        summary.pop("pending", None)
        return summary

    def status_table(self) -> str:
        """One line per stage: done and failed blocks and the summed block seconds."""
        header = ("stage", "done", "failed", "block seconds")
        rows = [header]
        for stage in self.store.stages():
            s = self.summary(stage)
            rows.append((stage, f"{s['done']:,}", f"{s['failed']:,}", f"{s['block_seconds']:.1f}"))
        return text_table(rows)


def text_table(rows: Sequence[Sequence[str]]) -> str:
    """Rows of strings as aligned columns (the first left-aligned, the others right), a rule under the first."""
    widths = [max(len(r[k]) for r in rows) for k in range(len(rows[0]))]
    lines = []
    for i, row in enumerate(rows):
        lines.append("  ".join(c.ljust(w) if k == 0 else c.rjust(w) for k, (c, w) in enumerate(zip(row, widths))))
        if i == 0:
            lines.append("  ".join("-" * w for w in widths))
    return "\n".join(lines)


__all__ = ["Ledger", "text_table"]
