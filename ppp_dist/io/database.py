"""Connections to the run database: an SQLite file (default) or PostgreSQL (clusters).

One small interface over both backends: bound parameters only (``?`` for SQLite, ``%s`` for PostgreSQL,
written as ``?`` by callers and translated here), one transaction per ``transaction()`` block. This module
holds the connection, the schema version and the ``runs`` table (which config and version wrote the
database); the graph tables of the distributed pipeline build on it.
"""

from __future__ import annotations

import contextlib
import datetime as _dt
import hashlib
import logging
import os
import sqlite3
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

from ppp_dist import __version__
from ppp_dist.config import DatabaseConfig
from ppp_dist.errors import DatabaseError

logger = logging.getLogger(__name__)

SCHEMA_VERSION = 1
DSN_ENV = "PPP_DIST_DB_DSN"

_SCHEMA = (
    "CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL)",
    "CREATE TABLE IF NOT EXISTS runs (run_id TEXT PRIMARY KEY, config_hash TEXT NOT NULL, "
    "version TEXT NOT NULL, created TEXT NOT NULL)",
)


def _redact(dsn: str) -> str:
    """The DSN without its password, for messages."""
    if "@" in dsn and "://" in dsn:
        scheme, rest = dsn.split("://", 1)
        credentials, host = rest.rsplit("@", 1)
        user = credentials.split(":", 1)[0]
        return f"{scheme}://{user}@{host}"
    return dsn


class Database:
    """A connection to the run database; use :func:`open_database` to make one."""

    def __init__(self, backend: str, connection: Any, where: str) -> None:
        self.backend = backend
        self.where = where
        self._conn = connection

    def _sql(self, sql: str) -> str:
        return sql.replace("?", "%s") if self.backend == "postgres" else sql

    def execute(self, sql: str, params: Sequence[Any] = ()) -> list[tuple]:
        """Run one statement (``?`` placeholders) in its own transaction; return the fetched rows."""
        with self.transaction() as cur:
            cur.execute(self._sql(sql), tuple(params))
            return cur.fetchall() if cur.description else []

    @contextlib.contextmanager
    def transaction(self) -> Iterator[Any]:
        """A cursor whose statements commit together, or not at all."""
        cur = self._conn.cursor()
        try:
            yield _Cursor(cur, self._sql)
            self._conn.commit()
        except BaseException:
            self._conn.rollback()
            raise
        finally:
            cur.close()

    def ensure_schema(self) -> None:
        with self.transaction() as cur:
            for statement in _SCHEMA:
                cur.execute(statement)
            cur.execute("SELECT value FROM meta WHERE key = ?", ("schema_version",))
            row = cur.fetchone()
            if row is None:
                cur.execute("INSERT INTO meta (key, value) VALUES (?, ?)", ("schema_version", str(SCHEMA_VERSION)))
            elif int(row[0]) != SCHEMA_VERSION:
                raise DatabaseError(f"database {self.where} has schema version {row[0]}, this ppp_dist expects "
                                    f"{SCHEMA_VERSION}; use a new database for this run")

    def register_run(self, config_text: str) -> str:
        """Record a run (config hash, version); returns its id. Re-registering the same config is a no-op."""
        config_hash = hashlib.sha256(config_text.encode()).hexdigest()[:16]
        run_id = f"{config_hash}-{__version__}"
        created = _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds")
        with self.transaction() as cur:
            cur.execute("SELECT 1 FROM runs WHERE run_id = ?", (run_id,))
            if cur.fetchone() is None:
                cur.execute("INSERT INTO runs (run_id, config_hash, version, created) VALUES (?, ?, ?, ?)",
                            (run_id, config_hash, __version__, created))
        return run_id

    def runs(self) -> list[tuple[str, str, str]]:
        return [tuple(r) for r in self.execute("SELECT run_id, version, created FROM runs ORDER BY created, run_id")]

    def close(self) -> None:
        self._conn.close()

    def __enter__(self) -> "Database":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


class _Cursor:
    """A DB-API cursor that accepts ``?`` placeholders on both backends."""

    def __init__(self, cursor: Any, translate: Any) -> None:
        self._cur, self._translate = cursor, translate

    def execute(self, sql: str, params: Sequence[Any] = ()) -> None:
        self._cur.execute(self._translate(sql), tuple(params))

    def executemany(self, sql: str, rows: Sequence[Sequence[Any]]) -> None:
        self._cur.executemany(self._translate(sql), rows)

    def fetchone(self) -> Any:
        return self._cur.fetchone()

    def fetchall(self) -> list[Any]:
        return self._cur.fetchall()

    @property
    def description(self) -> Any:
        return self._cur.description


def open_database(config: DatabaseConfig, experiment_dir: Path | str | None = None) -> Database:
    """Connect to the database ``config`` names and make sure its schema is there.

    SQLite: ``config.path`` or ``<experiment_dir>/graph.sqlite``, WAL journal so readers never block the
    writer. PostgreSQL: ``$PPP_DIST_DB_DSN`` or ``config.dsn``.
    """
    if config.backend == "sqlite":
        if config.path:
            path = Path(config.path)
        elif experiment_dir is not None:
            path = Path(experiment_dir) / "graph.sqlite"
        else:
            raise DatabaseError("[database] path is empty and there is no experiment folder to put "
                                "graph.sqlite in; set [database] path")
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            conn = sqlite3.connect(path, timeout=60.0)
            conn.execute("PRAGMA journal_mode=WAL")
        except (OSError, sqlite3.Error) as err:
            raise DatabaseError(f"cannot open the SQLite database {path} ({err}); choose a writable "
                                "[database] path") from err
        db = Database("sqlite", conn, str(path))
    else:
        dsn = os.environ.get(DSN_ENV) or config.dsn
        if not dsn:
            raise DatabaseError('[database] backend = "postgres" needs a connection string: set [database] '
                                f"dsn or the environment variable {DSN_ENV}")
        try:
            import psycopg2
        except ImportError as err:
            raise DatabaseError('[database] backend = "postgres" needs psycopg2; install it with '
                                "pip install 'ppp_dist[postgres]'") from err
        try:
            conn = psycopg2.connect(dsn, connect_timeout=10)
        except psycopg2.Error as err:
            reason = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
            raise DatabaseError(f"cannot reach PostgreSQL at {_redact(dsn)} ({reason}); start the server or "
                                f"fix [database] dsn / {DSN_ENV}") from err
        db = Database("postgres", conn, _redact(dsn))
    driver_errors: tuple[type[Exception], ...] = (sqlite3.Error,)
    if db.backend == "postgres":
        import psycopg2
        driver_errors = (psycopg2.Error,)
    try:
        db.ensure_schema()
    except driver_errors as err:
        db.close()
        raise DatabaseError(f"database {db.where} cannot be used ({err}); use a new database for this run") from err
    logger.debug("database %s (%s) ready", db.where, db.backend)
    return db
