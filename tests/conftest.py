"""Shared fixtures: database configs for both backends.

PostgreSQL tests carry the ``postgres`` marker. They run when PPP_DIST_TEST_POSTGRES_DSN names a server;
with PPP_DIST_REQUIRE_POSTGRES=1 (set by .ci/run) a missing or unreachable server fails them instead of
skipping, so CI cannot silently drop them.
"""

from __future__ import annotations

import os
import uuid

import pytest

from ppp_dist.config import DatabaseConfig

POSTGRES_DSN = os.environ.get("PPP_DIST_TEST_POSTGRES_DSN", "")
REQUIRE_POSTGRES = os.environ.get("PPP_DIST_REQUIRE_POSTGRES") == "1"


def _postgres_dsn_with_fresh_schema() -> str:
    """A DSN whose search_path is a new, empty schema, so tests never see each other's tables."""
    if not POSTGRES_DSN:
        if REQUIRE_POSTGRES:
            pytest.fail("PPP_DIST_REQUIRE_POSTGRES=1 but PPP_DIST_TEST_POSTGRES_DSN is not set")
        pytest.skip("no PostgreSQL: set PPP_DIST_TEST_POSTGRES_DSN (scripts/start_postgres.sh prints one)")
    import psycopg2

    schema = f"test_{uuid.uuid4().hex[:12]}"
    try:
        conn = psycopg2.connect(POSTGRES_DSN, connect_timeout=10)
    except psycopg2.Error as err:
        if REQUIRE_POSTGRES:
            pytest.fail(f"PostgreSQL required but unreachable: {err}")
        pytest.skip(f"PostgreSQL unreachable: {err}")
    with conn, conn.cursor() as cur:
        cur.execute(f"CREATE SCHEMA {schema}")
    conn.close()
    sep = "&" if "?" in POSTGRES_DSN else "?"
    return f"{POSTGRES_DSN}{sep}options=-csearch_path%3D{schema}"


@pytest.fixture(params=["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)])
def database_config(request, tmp_path) -> DatabaseConfig:
    """A [database] config for each backend: an SQLite file under tmp_path, or a fresh PostgreSQL schema."""
    if request.param == "sqlite":
        return DatabaseConfig(backend="sqlite", path=str(tmp_path / "graph.sqlite"))
    return DatabaseConfig(backend="postgres", dsn=_postgres_dsn_with_fresh_schema())


@pytest.fixture
def postgres_dsn() -> str:
    """A DSN whose search_path is a fresh schema (skips, or fails under PPP_DIST_REQUIRE_POSTGRES=1)."""
    return _postgres_dsn_with_fresh_schema()


@pytest.fixture
def torch_one_thread():
    """One torch thread: on 2 shared cores more threads oversubscribe and run tiny convolutions 10-50x slower.

    ``PPP_DIST_TEST_TORCH_THREADS=2`` runs the learning tests with 2 threads instead (they must pass with
    either: another thread count takes another floating-point trajectory).
    """
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(int(os.environ.get("PPP_DIST_TEST_TORCH_THREADS", "1")))
    yield
    torch.set_num_threads(before)


@pytest.fixture(scope="module")
def client():
    """A real 2-process dask LocalCluster (one thread per worker), one per test module."""
    from distributed import Client, LocalCluster

    cluster = LocalCluster(n_workers=2, threads_per_worker=1, processes=True, dashboard_address=None,
                           silence_logs=50)
    with Client(cluster) as c:
        yield c
    cluster.close()
