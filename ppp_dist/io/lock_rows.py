"""The SQL of the run database's ``locks`` table (one row per held lock; see ``ppp_dist.lock``).

A row holds the holder's token, host, pid, boot id, start time, heartbeat and command. The functions take a
cursor of an open transaction (read, replace) or a :class:`~ppp_dist.io.database.Database` (renew, delete).
"""

from __future__ import annotations

from typing import Any

from ppp_dist.io.database import Database

LOCK_COLUMNS = ("token", "host", "pid", "boot", "started", "heartbeat", "command")
_COLUMNS = ", ".join(LOCK_COLUMNS)


def read_lock_row(cur: Any, name: str) -> tuple | None:
    """The values of the lock row ``name`` in the order of :data:`LOCK_COLUMNS`, None if there is none."""
    cur.execute(f"SELECT {_COLUMNS} FROM locks WHERE name = ?", (name,))
    return cur.fetchone()


def replace_lock_row(cur: Any, name: str, values: tuple) -> None:
    """Make ``values`` (in the order of :data:`LOCK_COLUMNS`) the lock row ``name``."""
    cur.execute("DELETE FROM locks WHERE name = ?", (name,))
    marks = ", ".join("?" * (len(LOCK_COLUMNS) + 1))
    cur.execute(f"INSERT INTO locks (name, {_COLUMNS}) VALUES ({marks})", (name, *values))


def renew_lock_row(db: Database, name: str, token: str, heartbeat: float) -> None:
    """Set the heartbeat of the lock row ``name`` if ``token`` still holds it."""
    db.execute("UPDATE locks SET heartbeat = ? WHERE name = ? AND token = ?", (heartbeat, name, token))


def delete_lock_row(db: Database, name: str, token: str) -> None:
    """Delete the lock row ``name`` if ``token`` still holds it."""
    db.execute("DELETE FROM locks WHERE name = ? AND token = ?", (name, token))


__all__ = ["LOCK_COLUMNS", "delete_lock_row", "read_lock_row", "renew_lock_row", "replace_lock_row"]
