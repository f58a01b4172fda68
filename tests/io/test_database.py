"""The run database on SQLite and PostgreSQL: the same tests for both backends."""

from __future__ import annotations

import sqlite3

import pytest

from ppp_dist.config import DatabaseConfig
from ppp_dist.errors import DatabaseError
from ppp_dist.io.database import SCHEMA_VERSION, open_database


def test_schema_and_runs_round_trip(database_config, tmp_path):
    with open_database(database_config, tmp_path) as db:
        first = db.register_run("[vote]\npatch_threshold = 0.5\n")
        again = db.register_run("[vote]\npatch_threshold = 0.5\n")
        other = db.register_run("[vote]\npatch_threshold = 0.6\n")
        assert first == again != other
        assert {r[0] for r in db.runs()} == {first, other}
        assert db.execute("SELECT value FROM meta WHERE key = ?", ("schema_version",)) == [(str(SCHEMA_VERSION),)]
    with open_database(database_config, tmp_path) as db:  # reopening keeps what was written
        assert len(db.runs()) == 2


def test_transaction_rolls_back_on_error(database_config, tmp_path):
    with open_database(database_config, tmp_path) as db:
        db.execute("CREATE TABLE t (id BIGINT PRIMARY KEY)")
        with pytest.raises(RuntimeError):
            with db.transaction() as cur:
                cur.executemany("INSERT INTO t (id) VALUES (?)", [(1,), (2,)])
                raise RuntimeError("worker died mid-block")
        assert db.execute("SELECT count(*) FROM t") == [(0,)]
        with db.transaction() as cur:  # signed 64-bit ids survive
            cur.executemany("INSERT INTO t (id) VALUES (?)", [(2**63 - 1,), (-(2**63),)])
        assert sorted(r[0] for r in db.execute("SELECT id FROM t")) == [-(2**63), 2**63 - 1]


def test_schema_version_mismatch_is_one_sentence(tmp_path):
    path = tmp_path / "old.sqlite"
    open_database(DatabaseConfig(path=str(path))).close()
    with sqlite3.connect(path) as conn:
        conn.execute("UPDATE meta SET value = '99' WHERE key = 'schema_version'")
    with pytest.raises(DatabaseError, match="schema version 99.*use a new database"):
        open_database(DatabaseConfig(path=str(path)))


def test_unreachable_postgres_names_server_without_password():
    config = DatabaseConfig(backend="postgres", dsn="postgresql://me:secret@127.0.0.1:1/nothing")
    with pytest.raises(DatabaseError, match=r"cannot reach PostgreSQL at postgresql://me@127.0.0.1:1/nothing") as info:
        open_database(config)
    assert "secret" not in str(info.value)


def test_postgres_without_dsn_says_what_to_set(monkeypatch):
    monkeypatch.delenv("PPP_DIST_DB_DSN", raising=False)
    with pytest.raises(DatabaseError, match="set \\[database\\] dsn or the environment variable PPP_DIST_DB_DSN"):
        open_database(DatabaseConfig(backend="postgres"))


def test_unwritable_sqlite_location(tmp_path):
    blocker = tmp_path / "file"
    blocker.write_text("")
    with pytest.raises(DatabaseError, match="cannot open the SQLite database"):
        open_database(DatabaseConfig(path=str(blocker / "sub" / "graph.sqlite")))
