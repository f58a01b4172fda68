"""Connections to the run database: an SQLite file (default) or PostgreSQL (clusters).

One small interface over both backends: bound parameters only (``?`` for SQLite, ``%s`` for PostgreSQL,
written as ``?`` by callers and translated here), one transaction per ``transaction()`` block. This module
holds the connection, the schema and its version, and the ``runs`` table (which config and version wrote the
database); :mod:`ppp_dist.io.graph_store` reads and writes the graph tables on top of it.

Schema (version 4; a version-1, -2 or -3 database gains the missing tables when opened)::

    meta       (key TEXT PK, value TEXT)                        schema_version, ...
    runs       (run_id TEXT PK, config_hash, version, created)
    fragments  (id BIGINT PK, block BIGINT, z INT, y INT, x INT, size BIGINT)      index on block
    edges      (u BIGINT, v BIGINT, weight DOUBLE, count BIGINT, block BIGINT,
                PK (u, v), CHECK (u < v))                                           index on block
    lut        (fragment BIGINT PK, segment BIGINT)
    clusters   (id BIGINT PK, block BIGINT, size BIGINT)                            index on block
    patch_map  (patch BIGINT PK, cluster BIGINT, block BIGINT)                      index on block
    links      (a, b, u, v BIGINT, weight DOUBLE, kind INT, block BIGINT, PK (u, v), CHECK (u < v))
    segments   (cluster BIGINT PK, segment BIGINT)        phase 1 of the stitch (clusters that merged)
    tier2_groups (segment BIGINT PK, grp BIGINT)          phase 2: independent groups of tier-2 edges
    tier2_roots  (segment BIGINT PK, root BIGINT)         phase 2: segments that merged
    instances  (cluster BIGINT PK, block BIGINT, instance BIGINT)                   index on block
    blocks     (stage TEXT, block BIGINT, status TEXT, worker TEXT, seconds DOUBLE, attempts INT,
                counts TEXT (JSON), error TEXT, updated TEXT, PK (stage, block))    the ledger
    locks      (name TEXT PK, token, host, pid BIGINT, boot, started, heartbeat DOUBLE, command)
                                                                    the run holding the experiment (ppp_dist.lock)

Many writers: SQLite runs in WAL mode with a 60 s busy timeout, write transactions start with
``BEGIN IMMEDIATE`` (so two writers never deadlock upgrading a read lock), and :meth:`Database.retrying`
repeats a whole transaction with backoff on "database is locked". PostgreSQL takes one transaction per
block; serialization failures and deadlocks are retried the same way.
"""

from __future__ import annotations

import contextlib
import datetime as _dt
import hashlib
import logging
import os
import random
import sqlite3
import time
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any, TypeVar

from ppp_dist import __version__
from ppp_dist.config import DatabaseConfig
from ppp_dist.errors import DatabaseError
from ppp_dist.experiment import GRAPH_DB
from ppp_dist.redact import has_password, redact, without_password

logger = logging.getLogger(__name__)

SCHEMA_VERSION = 4
DSN_ENV = "PPP_DIST_DB_DSN"
SQLITE_BUSY_TIMEOUT_S = 60.0  # how long one SQLite statement waits for another writer's lock
RETRY_SECONDS = 600.0  # how long a transaction is repeated on lock/serialization errors before giving up
_T = TypeVar("_T")

# Types valid in both SQLite and PostgreSQL; the PostgreSQL binary COPY in graph_store relies on them
# being exactly int8 (BIGINT), int4 (INT) and float8 (DOUBLE PRECISION).
_SCHEMA = (
    "CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL)",
    "CREATE TABLE IF NOT EXISTS runs (run_id TEXT PRIMARY KEY, config_hash TEXT NOT NULL, "
    "version TEXT NOT NULL, created TEXT NOT NULL)",
    "CREATE TABLE IF NOT EXISTS fragments (id BIGINT PRIMARY KEY, block BIGINT NOT NULL, "
    "z INT NOT NULL, y INT NOT NULL, x INT NOT NULL, size BIGINT NOT NULL)",
    "CREATE INDEX IF NOT EXISTS fragments_block ON fragments (block)",
    "CREATE TABLE IF NOT EXISTS edges (u BIGINT NOT NULL, v BIGINT NOT NULL, weight DOUBLE PRECISION NOT NULL, "
    "count BIGINT NOT NULL, block BIGINT NOT NULL, PRIMARY KEY (u, v), CHECK (u < v))",
    "CREATE INDEX IF NOT EXISTS edges_block ON edges (block)",
    "CREATE TABLE IF NOT EXISTS lut (fragment BIGINT PRIMARY KEY, segment BIGINT NOT NULL)",
    "CREATE TABLE IF NOT EXISTS blocks (stage TEXT NOT NULL, block BIGINT NOT NULL, status TEXT NOT NULL, "
    "worker TEXT NOT NULL DEFAULT '', seconds DOUBLE PRECISION NOT NULL DEFAULT 0, attempts INT NOT NULL "
    "DEFAULT 0, counts TEXT NOT NULL DEFAULT '{}', error TEXT NOT NULL DEFAULT '', updated TEXT NOT NULL, "
    "PRIMARY KEY (stage, block))",
    # the contracted graph of the two-tier partition (ppp_dist.ops.contract) and the agglomeration's tables
    "CREATE TABLE IF NOT EXISTS clusters (id BIGINT PRIMARY KEY, block BIGINT NOT NULL, size BIGINT NOT NULL)",
    "CREATE INDEX IF NOT EXISTS clusters_block ON clusters (block)",
    "CREATE TABLE IF NOT EXISTS patch_map (patch BIGINT PRIMARY KEY, cluster BIGINT NOT NULL, block BIGINT NOT NULL)",
    "CREATE INDEX IF NOT EXISTS patch_map_block ON patch_map (block)",
    "CREATE TABLE IF NOT EXISTS links (a BIGINT NOT NULL, b BIGINT NOT NULL, u BIGINT NOT NULL, v BIGINT NOT NULL, "
    "weight DOUBLE PRECISION NOT NULL, kind INT NOT NULL, block BIGINT NOT NULL, PRIMARY KEY (u, v), CHECK (u < v))",
    "CREATE INDEX IF NOT EXISTS links_block ON links (block)",
    "CREATE TABLE IF NOT EXISTS segments (cluster BIGINT PRIMARY KEY, segment BIGINT NOT NULL)",
    "CREATE TABLE IF NOT EXISTS tier2_groups (segment BIGINT PRIMARY KEY, grp BIGINT NOT NULL)",
    "CREATE TABLE IF NOT EXISTS tier2_roots (segment BIGINT PRIMARY KEY, root BIGINT NOT NULL)",
    "CREATE TABLE IF NOT EXISTS instances (cluster BIGINT PRIMARY KEY, block BIGINT NOT NULL, "
    "instance BIGINT NOT NULL)",
    "CREATE INDEX IF NOT EXISTS instances_block ON instances (block)",
    "CREATE TABLE IF NOT EXISTS locks (name TEXT PRIMARY KEY, token TEXT NOT NULL, host TEXT NOT NULL, "
    "pid BIGINT NOT NULL, boot TEXT NOT NULL, started TEXT NOT NULL, heartbeat DOUBLE PRECISION NOT NULL, "
    "command TEXT NOT NULL)",
)
_MIGRATABLE = {1, 2, 3}  # older schema versions that only lack tables: CREATE IF NOT EXISTS upgrades them
_COLUMNS = {  # the columns of each table of _SCHEMA: a table of these names with other columns is foreign
    "meta": {"key", "value"},
    "runs": {"run_id", "config_hash", "version", "created"},
    "fragments": {"id", "block", "z", "y", "x", "size"},
    "edges": {"u", "v", "weight", "count", "block"},
    "lut": {"fragment", "segment"},
    "blocks": {"stage", "block", "status", "worker", "seconds", "attempts", "counts", "error", "updated"},
    "clusters": {"id", "block", "size"},
    "patch_map": {"patch", "cluster", "block"},
    "links": {"a", "b", "u", "v", "weight", "kind", "block"},
    "segments": {"cluster", "segment"},
    "tier2_groups": {"segment", "grp"},
    "tier2_roots": {"segment", "root"},
    "instances": {"cluster", "block", "instance"},
    "locks": {"name", "token", "host", "pid", "boot", "started", "heartbeat", "command"},
}
OWNER_ID, OWNER_PATH = "experiment_id", "experiment_path"  # meta keys: the experiment the database belongs to


def _is_transient(err: BaseException) -> bool:
    """Errors after which repeating the whole transaction can succeed (lock contention, PG conflicts)."""
    if isinstance(err, sqlite3.OperationalError):
        text = str(err).lower()
        return "locked" in text or "busy" in text
    code = getattr(err, "pgcode", None)
    # 40001 serialization_failure, 40P01 deadlock_detected, 55P03 lock_not_available
    return code in ("40001", "40P01", "55P03")


def _redact(dsn: str) -> str:
    """The DSN without its password (URL or libpq key=value form), for messages."""
    return without_password(dsn)


class Database:
    """A connection to the run database; use :func:`open_database` to make one."""

    def __init__(self, backend: str, connection: Any, where: str) -> None:
        self.backend = backend
        self.where = where
        self._conn = connection

    @property
    def connection(self) -> Any:
        """The DB-API connection (sqlite3 or psycopg2), for backend-specific bulk paths."""
        return self._conn

    @property
    def driver_errors(self) -> tuple[type[Exception], ...]:
        """The exception classes of this backend's driver."""
        if self.backend == "postgres":
            import psycopg2
            return (psycopg2.Error,)
        return (sqlite3.Error,)

    def retrying(self, work: Callable[[], _T], what: str, *, seconds: float | None = None) -> _T:
        """Call ``work`` (one whole transaction) again with backoff while it fails on lock contention.

        SQLite: "database is locked" / "busy" (many writer processes); PostgreSQL: serialization failures
        and deadlocks. Other errors propagate at once. After ``seconds`` the last error is raised as a
        :class:`DatabaseError` naming ``what``.
        """
        seconds = RETRY_SECONDS if seconds is None else seconds
        deadline = time.monotonic() + seconds
        delay, attempt = 0.01, 0
        while True:
            attempt += 1
            try:
                return work()
            except Exception as err:
                if not _is_transient(err):
                    raise
                if time.monotonic() + delay > deadline:
                    if self.backend == "sqlite":
                        raise DatabaseError(f"{what}: database {self.where} stayed locked for {seconds:.0f} s "
                                            f"({err}); too many concurrent writers — use PostgreSQL for this "
                                            "many workers") from err
                    raise DatabaseError(f"{what}: database {self.where} kept reporting conflicts for "
                                        f"{seconds:.0f} s ({str(err).strip().splitlines()[0]}); check for "
                                        "long-running transactions holding locks") from err
                logger.debug("%s: %s (attempt %d), retrying in %.2f s", what, err, attempt, delay)
                time.sleep(delay * (0.5 + random.random()))
                delay = min(delay * 2, 2.0)

    def _sql(self, sql: str) -> str:
        return sql.replace("?", "%s") if self.backend == "postgres" else sql

    def execute(self, sql: str, params: Sequence[Any] = ()) -> list[tuple]:
        """Run one statement (``?`` placeholders) in its own transaction; return the fetched rows.

        Retried on lock contention (see :meth:`retrying`).
        """
        write = not sql.lstrip().upper().startswith(("SELECT", "WITH"))

        def work() -> list[tuple]:
            with self.transaction(write=write) as cur:
                cur.execute(sql, tuple(params))
                return cur.fetchall() if cur.description else []
        return self.retrying(work, sql.split(None, 3)[0] if sql.strip() else "statement")

    @contextlib.contextmanager
    def transaction(self, *, write: bool = True) -> Iterator[Any]:
        """A cursor whose statements commit together, or not at all.

        With SQLite a ``write`` transaction takes the write lock up front (``BEGIN IMMEDIATE``), waiting up
        to the busy timeout for other writers; a read-only one (``write=False``) never blocks writers.
        """
        cur = self._conn.cursor()
        try:
            if self.backend == "sqlite":
                cur.execute("BEGIN IMMEDIATE" if write else "BEGIN")
            yield _Cursor(cur, self._sql)
            self._conn.commit()
        except BaseException:
            try:
                self._conn.rollback()
            except self.driver_errors as err:  # the connection itself may be gone; report the first error
                logger.debug("rollback failed: %s", err)
            raise
        finally:
            cur.close()

    def ensure_schema(self) -> None:
        """Create the tables if missing, upgrade a version-1 database, refuse any other version."""
        self.retrying(self._ensure_schema, "creating the schema")

    def _current_version(self) -> str | None:
        """The stored schema version, or None when there is no meta table yet (read-only, takes no locks)."""
        exists = ("SELECT to_regclass('meta') IS NOT NULL" if self.backend == "postgres" else
                  "SELECT count(*) > 0 FROM sqlite_master WHERE type = 'table' AND name = 'meta'")
        with self.transaction(write=False) as cur:
            cur.execute(exists)
            if not cur.fetchone()[0]:
                return None
            cur.execute("SELECT value FROM meta WHERE key = ?", ("schema_version",))
            row = cur.fetchone()
        return None if row is None else str(row[0])

    def _tables(self, cur: Any) -> dict[str, set[str]]:
        """The tables of this database (PostgreSQL: of the current schema) and their columns; read-only."""
        if self.backend == "postgres":
            cur.execute("SELECT table_name, column_name FROM information_schema.columns "
                        "WHERE table_schema = current_schema()")
        else:
            cur.execute("SELECT m.name, p.name FROM sqlite_master AS m, pragma_table_info(m.name) AS p "
                        "WHERE m.type = 'table' AND m.name NOT LIKE 'sqlite_%'")
        tables: dict[str, set[str]] = {}
        for table, column in cur.fetchall():
            tables.setdefault(str(table), set()).add(str(column))
        return tables

    def _check_tables(self, tables: dict[str, set[str]], version: str | None) -> None:
        """DatabaseError if the tables are another program's, or of a schema version this code cannot use."""
        ours = sorted(set(tables) & set(_COLUMNS))
        if tables and not ours:
            names = ", ".join(sorted(tables)[:5]) + (", ..." if len(tables) > 5 else "")
            raise DatabaseError(f"database {self.where} holds tables of another program ({names}), not a ppp_dist "
                                "graph database; use a new database for this run")
        for name in ours:
            if tables[name] != _COLUMNS[name]:
                raise DatabaseError(f"database {self.where} has a table '{name}' with the columns "
                                    f"({', '.join(sorted(tables[name]))}) where ppp_dist expects "
                                    f"({', '.join(sorted(_COLUMNS[name]))}): a foreign schema; use a new database "
                                    "for this run")
        if version is not None and (not version.isdigit() or
                                    (int(version) != SCHEMA_VERSION and int(version) not in _MIGRATABLE)):
            raise DatabaseError(f"database {self.where} has schema version {version}, this ppp_dist expects "
                                f"{SCHEMA_VERSION}; use a new database for this run")

    def state(self) -> dict[str, str]:
        """The ``meta`` table as a dict (empty for a new database) after checking the schema; read-only.

        Raises DatabaseError for a foreign schema or another schema version (see :meth:`ensure_schema`).
        """
        with self.transaction(write=False) as cur:
            tables = self._tables(cur)
            meta: dict[str, str] = {}
            if "meta" in tables and tables["meta"] == _COLUMNS["meta"]:
                cur.execute("SELECT key, value FROM meta")
                meta = {str(k): str(v) for k, v in cur.fetchall()}
        self._check_tables(tables, meta.get("schema_version"))
        return meta

    def claim(self, experiment_id: str, experiment_path: str) -> None:
        """Record that the experiment ``experiment_id`` writes this database.

        A database belongs to one experiment: the stages skip blocks that its ledger marks done, so the
        graph of another run would silently become part of this one. DatabaseError if another experiment
        claimed it; a database without an owner (new, or written before owners were recorded) is taken.
        """
        def work() -> None:
            with self.transaction() as cur:
                cur.execute("SELECT key, value FROM meta WHERE key IN (?, ?)", (OWNER_ID, OWNER_PATH))
                found = {str(k): str(v) for k, v in cur.fetchall()}
                if found.get(OWNER_ID, experiment_id) != experiment_id:
                    raise DatabaseError(foreign_owner_message(self.where, found.get(OWNER_PATH, "?")))
                for key, value in ((OWNER_ID, experiment_id), (OWNER_PATH, experiment_path)):
                    cur.execute("INSERT INTO meta (key, value) VALUES (?, ?) ON CONFLICT (key) DO UPDATE "
                                "SET value = excluded.value", (key, value))
        self.retrying(work, "recording the experiment of the database")

    def _ensure_schema(self) -> None:
        # Workers open the database while others write: when the schema is current, run no DDL at all
        # (PostgreSQL's CREATE INDEX IF NOT EXISTS takes a SHARE lock and deadlocks with writers).
        if self._current_version() == str(SCHEMA_VERSION):
            return
        with self.transaction() as cur:
            if self.backend == "postgres":
                # concurrent CREATE TABLE IF NOT EXISTS races on PostgreSQL's catalog; serialise the workers
                cur.execute("SELECT pg_advisory_xact_lock(?)", (0x7070_6470,))
            tables = self._tables(cur)
            version = None
            if tables.get("meta") == _COLUMNS["meta"]:
                cur.execute("SELECT value FROM meta WHERE key = ?", ("schema_version",))
                found = cur.fetchone()
                version = None if found is None else str(found[0])
            self._check_tables(tables, version)
            cur.execute(_SCHEMA[0])
            cur.execute("SELECT value FROM meta WHERE key = ?", ("schema_version",))
            row = cur.fetchone()
            for statement in _SCHEMA[1:]:
                cur.execute(statement)
            if row is None:
                cur.execute("INSERT INTO meta (key, value) VALUES (?, ?)", ("schema_version", str(SCHEMA_VERSION)))
            elif int(row[0]) != SCHEMA_VERSION:
                logger.info("database %s: schema version %s upgraded to %d", self.where, row[0], SCHEMA_VERSION)
                cur.execute("UPDATE meta SET value = ? WHERE key = ?", (str(SCHEMA_VERSION), "schema_version"))

    def register_run(self, config_text: str) -> str:
        """Record a run (config hash, version); returns its id. Re-registering the same config is a no-op."""
        config_hash = hashlib.sha256(config_text.encode()).hexdigest()[:16]
        run_id = f"{config_hash}-{__version__}"
        created = _dt.datetime.now(_dt.UTC).isoformat(timespec="seconds")

        def work() -> None:
            with self.transaction() as cur:
                cur.execute("SELECT 1 FROM runs WHERE run_id = ?", (run_id,))
                if cur.fetchone() is None:
                    cur.execute("INSERT INTO runs (run_id, config_hash, version, created) VALUES (?, ?, ?, ?)",
                                (run_id, config_hash, __version__, created))
        self.retrying(work, "registering the run")
        return run_id

    def runs(self) -> list[tuple[str, str, str]]:
        return [tuple(r) for r in self.execute("SELECT run_id, version, created FROM runs ORDER BY created, run_id")]

    def close(self) -> None:
        self._conn.close()

    def __enter__(self) -> Database:
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

    def fetchmany(self, size: int) -> list[Any]:
        return self._cur.fetchmany(size)

    @property
    def raw(self) -> Any:
        """The driver's cursor (for psycopg2 ``copy_expert`` and similar)."""
        return self._cur

    @property
    def description(self) -> Any:
        return self._cur.description


def _retry_pragma(conn: sqlite3.Connection, pragma: str) -> None:
    """Switching to WAL needs a moment of exclusive access; many processes opening at once may collide."""
    deadline = time.monotonic() + SQLITE_BUSY_TIMEOUT_S
    while True:
        try:
            conn.execute(pragma)
            return
        except sqlite3.OperationalError as err:
            if not _is_transient(err) or time.monotonic() > deadline:
                raise
            time.sleep(0.01 + 0.05 * random.random())


def foreign_owner_message(where: str, owner_path: str) -> str:
    """The sentence for a database that another experiment writes."""
    return (f"database {where} belongs to another experiment ({owner_path}): its graph and ledger are that "
            f"run's; resume it with --exp {owner_path}, or give this run its own database ([database] path, or "
            "dsn for PostgreSQL)")


def sqlite_path(config: DatabaseConfig, experiment_dir: Path | str | None) -> Path:
    """The SQLite file of ``config``: ``[database] path`` or ``<experiment_dir>/graph.sqlite``."""
    if config.path:
        return Path(config.path)
    if experiment_dir is not None:
        return Path(experiment_dir) / GRAPH_DB
    raise DatabaseError("[database] path is empty and there is no experiment folder to put graph.sqlite in; set "
                        "[database] path")


def _postgres_dsn(config: DatabaseConfig) -> str:
    dsn = os.environ.get(DSN_ENV) or config.dsn
    if not dsn:
        raise DatabaseError('[database] backend = "postgres" needs a connection string: set [database] '
                            f"dsn or the environment variable {DSN_ENV}")
    return dsn


def _connect_postgres(dsn: str) -> Database:
    try:
        import psycopg2
    except ImportError as err:
        raise DatabaseError('[database] backend = "postgres" needs psycopg2; install it with '
                            "pip install 'ppp_dist[postgres]'") from err
    try:
        conn = psycopg2.connect(dsn, connect_timeout=10)
    except psycopg2.Error as err:
        reason = redact(str(err).strip().splitlines()[0]) if str(err).strip() else type(err).__name__
        hint = "" if has_password(dsn) or "password" not in reason else \
            f"; a saved config keeps no password: give it in {DSN_ENV}, PGPASSWORD or ~/.pgpass"
        raise DatabaseError(f"cannot reach PostgreSQL at {_redact(dsn)} ({reason}){hint}; start the server or "
                            f"fix [database] dsn / {DSN_ENV}") from err
    return Database("postgres", conn, _redact(dsn))


def _not_sqlite(path: Path, err: BaseException) -> DatabaseError:
    return DatabaseError(f"{path} is not an SQLite database ({err}); point [database] path at a new file or at "
                         "the graph.sqlite of this experiment")


def open_database(config: DatabaseConfig, experiment_dir: Path | str | None = None) -> Database:
    """Connect to the database ``config`` names and make sure its schema is there.

    SQLite: ``config.path`` or ``<experiment_dir>/graph.sqlite``, WAL journal so readers never block the
    writer. PostgreSQL: ``$PPP_DIST_DB_DSN`` or ``config.dsn``. A database with a foreign schema (tables
    of another program, other columns, another schema version) raises DatabaseError and is not changed.
    """
    if config.backend == "sqlite":
        path = sqlite_path(config, experiment_dir)
        if path.is_dir():
            raise DatabaseError(f"[database] path {path} is a folder; give a file name such as {path / GRAPH_DB}")
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            # isolation_level=None: transactions are begun explicitly (BEGIN IMMEDIATE for writers)
            conn = sqlite3.connect(path, timeout=SQLITE_BUSY_TIMEOUT_S, isolation_level=None)
        except (OSError, sqlite3.Error) as err:
            raise DatabaseError(f"cannot open the SQLite database {path} ({err}); choose a writable "
                                "[database] path") from err
        db = Database("sqlite", conn, str(path))
        try:
            db.state()  # a foreign file is refused before the journal mode (a write) is changed
            _retry_pragma(conn, "PRAGMA journal_mode=WAL")
            conn.execute("PRAGMA synchronous=NORMAL")  # WAL + NORMAL: consistent after a crash, fast commits
        except sqlite3.DatabaseError as err:
            db.close()
            if "not a database" in str(err) or "malformed" in str(err):
                raise _not_sqlite(path, err) from err
            raise DatabaseError(f"cannot open the SQLite database {path} ({err}); choose a writable "
                                "[database] path") from err
        except DatabaseError:
            db.close()
            raise
    else:
        db = _connect_postgres(_postgres_dsn(config))
    try:
        db.ensure_schema()
    except db.driver_errors as err:
        db.close()
        if "disk is full" in str(err):
            raise DatabaseError(f"no space left for the database {db.where} ({err}); free some space, then run the "
                                "same command again: it resumes where it stopped") from err
        raise DatabaseError(f"database {db.where} cannot be used ({err}); use a new database for this run") from err
    except DatabaseError:
        db.close()
        raise
    logger.debug("database %s (%s) ready", db.where, db.backend)
    return db


def inspect_database(config: DatabaseConfig, experiment_dir: Path | str | None = None) -> tuple[str, dict[str, str]]:
    """Check, without writing anything, that ``open_database`` could use the database; return its meta table.

    For checks before a run starts: the SQLite file (if it exists) is opened read-only, a missing one must
    be creatable; PostgreSQL must answer. Raises DatabaseError naming the database for an unreachable
    server, a file that is not SQLite, a foreign schema or another schema version. Returns where the
    database is (for messages) and its meta table: empty for a new database, with ``OWNER_ID`` /
    ``OWNER_PATH`` once an experiment claimed it.
    """
    db = open_read_only(config, experiment_dir)
    if db is None:
        return str(sqlite_path(config, experiment_dir)), {}
    try:
        return db.where, db.state()
    except db.driver_errors as err:
        if "not a database" in str(err) or "malformed" in str(err):
            raise _not_sqlite(Path(db.where), err) from err
        raise DatabaseError(f"database {db.where} cannot be used ({err}); use a new database for this "
                            "run") from err
    finally:
        db.close()


def open_read_only(config: DatabaseConfig, experiment_dir: Path | str | None = None) -> Database | None:
    """The database of ``config`` opened for reading only (SQLite: no file is created or changed), or None
    for an SQLite file that does not exist yet (DatabaseError if it could not be created)."""
    if config.backend == "postgres":
        return _connect_postgres(_postgres_dsn(config))
    path = sqlite_path(config, experiment_dir)
    if path.is_dir():
        raise DatabaseError(f"[database] path {path} is a folder; give a file name such as {path / GRAPH_DB}")
    if not path.exists():
        probe = path.parent
        while not probe.exists() and probe != probe.parent:
            probe = probe.parent
        if not probe.is_dir() or not os.access(probe, os.W_OK | os.X_OK):
            why = "is a file" if probe.exists() and not probe.is_dir() else "is not writable"
            raise DatabaseError(f"cannot create the SQLite database {path}: {probe} {why}; choose a writable "
                                "[database] path")
        return None
    # Without a -wal file the database file holds everything: opened immutable, SQLite creates no -wal/-shm
    # files (a plain read-only open of a WAL database leaves them behind). With one, the database is in use
    # and the -wal and -shm files are there already.
    wal = path.with_name(path.name + "-wal").exists()
    try:
        conn = sqlite3.connect(f"{path.resolve().as_uri()}?{'mode=ro' if wal else 'immutable=1'}", uri=True,
                               isolation_level=None, timeout=SQLITE_BUSY_TIMEOUT_S)
    except sqlite3.Error as err:
        raise DatabaseError(f"cannot open the SQLite database {path} ({err}); choose a readable [database] "
                            "path") from err
    return Database("sqlite", conn, str(path))
