"""Opening the graph store of a run's database backend, and the picklable recipe dask tasks carry instead."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from ppp_dist.config import DatabaseConfig
from ppp_dist.io.database import open_database
from ppp_dist.io.graph_store import GraphStore


def open_graph_store(config: DatabaseConfig, experiment_dir: Path | str | None = None) -> GraphStore:
    """Open (and create if needed) the run database as a :class:`GraphStore` of its backend."""
    db = open_database(config, experiment_dir)
    if db.backend == "postgres":
        from ppp_dist.io.postgres_store import PostgresGraphStore

        return PostgresGraphStore(db)
    from ppp_dist.io.sqlite_store import SQLiteGraphStore

    return SQLiteGraphStore(db)


@dataclass(frozen=True)
class StoreFactory:
    """A picklable recipe for a :class:`GraphStore`: what dask tasks carry instead of a connection.

    Workers turn it into one cached store per process (:func:`ppp_dist.pipeline.worker.worker_store`).
    """

    config: DatabaseConfig
    experiment_dir: str | None = None

    def __call__(self) -> GraphStore:
        return open_graph_store(self.config, self.experiment_dir)


__all__ = ["StoreFactory", "open_graph_store"]
