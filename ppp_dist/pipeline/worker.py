"""What a stage's ``process_block`` may use on a worker without importing the runner that calls it: the
:class:`BlockOutput` it returns and the graph store cached per worker process (:func:`worker_store`)."""

from __future__ import annotations

import logging
import os
import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from ppp_dist.io.graph_store import GraphStore

logger = logging.getLogger(__name__)


@dataclass
class BlockOutput:
    """What a graph-producing ``process_block`` returns: written by the runner in one transaction.

    Attributes
    ----------
    fragments : structured array or mapping
        See :func:`ppp_dist.io.graph_store.make_fragments` (id, z, y, x, size).
    edges : structured array or mapping
        See :func:`ppp_dist.io.graph_store.make_edges` (u, v, weight, count); only the edges this block
        owns (the block of min(u, v)), each once.
    counts : dict
        Small JSON-able numbers for the ledger (voxels, patches, ...).
    clusters, patch_map, links : structured arrays, optional
        The contracted graph (``ppp_dist.ops.contract``; see :meth:`GraphStore.write_block`).
    """

    fragments: Any = None
    edges: Any = None
    counts: dict = field(default_factory=dict)
    clusters: Any = None
    patch_map: Any = None
    links: Any = None

    def tables(self) -> dict[str, Any]:
        """The tables given, by name."""
        return {name: table for name, table in (("fragments", self.fragments), ("edges", self.edges),
                                                ("clusters", self.clusters), ("patch_map", self.patch_map),
                                                ("links", self.links)) if table is not None}


_STORES: dict[str, GraphStore] = {}


def _factory_key(factory: Callable[[], GraphStore]) -> str:
    from dask.base import tokenize

    # one connection per thread: sqlite3 connections must not cross threads, and interleaved transactions
    # of two threads on one PostgreSQL connection would commit each other's rows
    return f"{tokenize(factory)}-{threading.get_ident()}"


def worker_store(factory: Callable[[], GraphStore]) -> GraphStore:
    """The store ``factory`` makes, created once per worker process (and thread) and reused by its blocks."""
    key = _factory_key(factory)
    store = _STORES.get(key)
    if store is None:
        store = _STORES[key] = factory()
        logger.debug("process %d opened %s", os.getpid(), store.where)
    return store


def drop_worker_store(factory: Callable[[], GraphStore]) -> None:
    """Forget (and close) a cached store after an error, so the next block reconnects."""
    store = _STORES.pop(_factory_key(factory), None)
    if store is not None:
        try:
            store.close()
        except Exception as err:  # closing a broken connection may fail too; the error was already logged
            logger.debug("closing a broken store: %s", err)


def close_worker_stores() -> None:
    """Close every cached store of this process."""
    while _STORES:
        _, store = _STORES.popitem()
        try:
            store.close()
        except Exception as err:
            logger.debug("closing a store: %s", err)


__all__ = ["BlockOutput", "close_worker_stores", "drop_worker_store", "worker_store"]
