"""agglomerate: fragments + cross-block edges in the graph DB -> the fragment -> segment LUT.

Single linkage at a threshold: two fragments belong to one segment when a path of edges with
``weight > edge_threshold`` joins them (a positive comparison, so nothing NaN-like ever merges; NaN weights
are refused when written). Segment id = the smallest fragment id of the component, so the LUT does not
depend on block size, worker count, edge order or batch size (invariants 1 and 4).

Two ways to run it, with identical results (tested):

* :func:`agglomerate` — the driver streams edges above the threshold out of the DB in batches of
  ``batch_size`` rows into a numba union-find over the fragment ids. Memory: ~17 bytes per fragment plus
  one batch of edges; the edge count only costs time (reading the rows dominates).
* :func:`agglomerate_hierarchical` — for graphs with very many edges, or to spread the reading over a
  cluster: leaf tasks each read the edges written by a range of ``blocks_per_leaf`` consecutive blocks
  (raster order, so leaves are slabs of the volume) and reduce them to a merge table (node -> smallest id
  of its component among those edges: at most 2 rows per edge, usually far fewer); inner tasks merge
  ``fan_in`` child tables; the root table is applied to all fragment ids. Tasks are dask delayed objects,
  run on the given client (or in-process). Memory per task: its edges or its children's tables; the root
  table holds at most the fragments that have an edge above the threshold.

Both write the ``lut`` table (replacing the previous one, one transaction) and a ledger row
``(stage="agglomerate", block=0)`` with the counts, and fail with :class:`DatabaseError` when an edge
names a fragment that is not in the fragments table (a block that owns it was never written: finish the
vote stage first).
"""

from __future__ import annotations

import logging
import math
import socket
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np

from ppp_dist.errors import DatabaseError
from ppp_dist.io.graph_store import GraphStore
from ppp_dist.ops.union_find import UnionFind, apply_table, edge_table, merge_tables

logger = logging.getLogger(__name__)

STAGE = "agglomerate"


@dataclass(frozen=True)
class AgglomerateSummary:
    """What one agglomeration did."""

    method: str  # "flat" or "hierarchical"
    edge_threshold: float
    fragments: int  # rows in the LUT
    edges_merged: int  # edges with weight > threshold that were read
    merges: int  # unions that joined two different sets (flat) / fragments - segments
    segments: int  # distinct segment ids
    seconds: float
    tasks: int = 1  # dask tasks (hierarchical)

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)

    def format(self) -> str:
        return (f"agglomerate ({self.method}, weight > {self.edge_threshold:g}): {self.fragments:,} fragments -> "
                f"{self.segments:,} segments from {self.edges_merged:,} edges in {self.seconds:.1f} s")


def _check_threshold(edge_threshold: float) -> float:
    t = float(edge_threshold)
    if math.isnan(t):
        raise ValueError("edge_threshold is NaN; give a number (edges with weight > threshold merge)")
    return t


def _missing_fragment_error(err: Exception | str, where: str) -> DatabaseError:
    return DatabaseError(f"{err} in the fragments table of {where}: a block that owns it was never written "
                         "(failed or unfinished blocks of the vote stage?); finish that stage, then agglomerate")


def _finish(store: GraphStore, ids: np.ndarray, segments: np.ndarray, summary: AgglomerateSummary) -> None:
    store.write_lut(ids, segments)
    store.mark_done(STAGE, 0, {k: v for k, v in summary.as_dict().items() if k != "method"},
                    seconds=summary.seconds, worker=socket.gethostname())
    logger.info("%s", summary.format())


def agglomerate(store: GraphStore, *, edge_threshold: float, batch_size: int = 1_000_000) -> AgglomerateSummary:
    """Union-find over all edges with ``weight > edge_threshold``, streamed from ``store``; writes the LUT.

    Parameters
    ----------
    store : GraphStore
        The run database after the vote stage wrote fragments and edges.
    edge_threshold : float
        Edges with a weight strictly above it merge their fragments.
    batch_size : int
        Edge rows per read (memory: ~32 bytes per row while a batch is converted).

    Returns
    -------
    AgglomerateSummary
    """
    threshold = _check_threshold(edge_threshold)
    started = time.perf_counter()
    ids = store.fragment_ids(batch_size)
    uf = UnionFind(ids)
    del ids
    for batch in store.iter_edges(batch_size, min_weight=threshold):
        try:
            uf.union(batch.u, batch.v)
        except KeyError as err:
            raise _missing_fragment_error(err.args[0], store.where) from err
    segments = uf.labels()
    summary = AgglomerateSummary("flat", threshold, len(uf), uf.edges_seen, uf.merges,
                                 int(np.unique(segments).size), time.perf_counter() - started)
    _finish(store, uf.ids, segments, summary)
    return summary


# ---------------------------------------------------------------------------------------------------------
# Hierarchical reduction as dask tasks


def _leaf_table(store_factory: Callable[[], GraphStore], first: int, stop: int, threshold: float,
                batch_size: int, tier: int | None = None) -> tuple[np.ndarray, np.ndarray, int]:
    """Merge table of the edges written by blocks ``first <= block < stop`` (runs on a worker)."""
    from ppp_dist.runner import worker_store

    store = worker_store(store_factory)
    us, vs = [], []
    for batch in store.iter_edges(batch_size, min_weight=threshold, blocks=(first, stop), tier=tier):
        us.append(batch.u)
        vs.append(batch.v)
    if not us:
        return np.zeros(0, np.int64), np.zeros(0, np.int64), 0
    u, v = np.concatenate(us), np.concatenate(vs)
    nodes, reps = edge_table(u, v)
    return nodes, reps, len(u)


def _merge(children: list[tuple[np.ndarray, np.ndarray, int]]) -> tuple[np.ndarray, np.ndarray, int]:
    nodes, reps = merge_tables([(c[0], c[1]) for c in children])
    return nodes, reps, sum(c[2] for c in children)


def agglomerate_hierarchical(store: GraphStore, store_factory: Callable[[], GraphStore], *, edge_threshold: float,
                             blocks_per_leaf: int = 64, fan_in: int = 8, batch_size: int = 1_000_000,
                             client: Any = None, tier: int | None = None) -> AgglomerateSummary:
    """Like :func:`agglomerate`, reduced as a tree of dask tasks (leaves = ranges of block ids).

    Parameters
    ----------
    store : GraphStore
        The driver's store: reads the fragment ids and the block range, writes the LUT.
    store_factory : callable
        Picklable zero-argument callable returning a store, used by the leaf tasks on the workers
        (e.g. :class:`ppp_dist.io.graph_store.StoreFactory`).
    blocks_per_leaf, fan_in : int
        Leaf size in blocks and the number of children per merge task.
    client : distributed.Client, optional
        Runs the tasks on its cluster; ``None`` runs them in this process (synchronous scheduler).
    tier : 1 or 2, optional
        Merge only over tier-1 (or tier-2) edges: phase 1 of the two-tier partition
        (``ppp_dist.pipeline.segments``).
    """
    import dask

    threshold = _check_threshold(edge_threshold)
    if blocks_per_leaf < 1 or fan_in < 2:
        raise ValueError(f"blocks_per_leaf must be >= 1 and fan_in >= 2, got {blocks_per_leaf} and {fan_in}")
    started = time.perf_counter()
    lo, hi = store.db.execute("SELECT min(block), max(block) FROM edges")[0]
    leaves = []
    if lo is not None:
        for first in range(int(lo), int(hi) + 1, blocks_per_leaf):
            leaves.append(dask.delayed(_leaf_table, pure=False)(store_factory, first, first + blocks_per_leaf,
                                                                threshold, batch_size, tier))
    tasks, level = len(leaves), leaves
    while len(level) > 1:
        level = [dask.delayed(_merge, pure=False)(level[k:k + fan_in]) for k in range(0, len(level), fan_in)]
        tasks += len(level)
    if not level:
        nodes, reps, n_edges = np.zeros(0, np.int64), np.zeros(0, np.int64), 0
    elif client is not None:
        nodes, reps, n_edges = client.compute(level[0]).result()
    else:
        from ppp_dist.runner import close_worker_stores

        try:
            nodes, reps, n_edges = dask.compute(level[0], scheduler="sync")[0]
        finally:
            close_worker_stores()
    ids = store.fragment_ids(batch_size)
    if len(nodes):
        pos = np.minimum(np.searchsorted(ids, nodes), max(len(ids) - 1, 0))
        known = ids[pos] == nodes if len(ids) else np.zeros(len(nodes), bool)
        if not known.all():
            raise _missing_fragment_error(f"an edge names fragment {int(nodes[np.argmin(known)])}, which is not",
                                          store.where)
    segments = apply_table(ids, nodes, reps)
    n_segments = int(np.unique(segments).size)
    summary = AgglomerateSummary("hierarchical", threshold, len(ids), int(n_edges), len(ids) - n_segments,
                                 n_segments, time.perf_counter() - started, tasks)
    _finish(store, ids, segments, summary)
    return summary


__all__ = ["AgglomerateSummary", "agglomerate", "agglomerate_hierarchical"]
