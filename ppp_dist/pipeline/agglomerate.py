"""Agglomeration: the graph in the run database -> instance ids. The one module that merges fragments.

**The pipeline's instances** (:func:`agglomerate_instances`), exactly ``ops.partition`` of the whole
volume's patch graph:

* ``connected_components`` (two tiers), on the contracted graph the vote blocks stored
  (``ppp_dist.ops.contract``; docs/pipeline.md has the proof):

  1. *stitch* (phase 1): the union of the clusters over the cross-block attractive links, as a tree of dask
     tasks on the workers -- leaves read the links of a range of blocks (the foreign end resolved through
     its block's map by the database), inner tasks merge the leaves' merge tables, the root writes the
     ``segments`` table. The driver only submits tasks.
  2. *tier 2* (phase 2): the tier-2 links join segments into independent groups; one task finds the groups,
     then one task per batch of groups runs ``ops.partition.merge_tier2`` with the mutexes among them. The
     driver holds one number per group.
  3. *ids*: the database numbers the instances by their smallest cluster id (= smallest patch id), the ids
     of ``ops.assemble``; a task runs that statement.

* ``mutex_watershed``: it cannot be contracted (attractive and repulsive edges interleave), so the full
  graph is read into the driver and ``ops.partition`` runs on it (~40 bytes per edge; refused in one
  sentence above ``[vote] mws_max_memory_gib``).

**Single linkage of a fragment graph** (:func:`agglomerate`, :func:`agglomerate_hierarchical`): fragments +
edges -> the fragment -> segment LUT (segment = smallest fragment id of the component over the edges with
``weight > edge_threshold``): the driver streams the edges into one union-find, or the same tree of tasks
reduces them on the workers. Results are identical; the LUT does not depend on block size, worker count,
edge order or batch size.

All union-finds are ``ppp_dist.ops.union_find`` and the ``ops._graph_kernels`` kernel; all SQL is in
``ppp_dist.io.graph_store``.
"""

from __future__ import annotations

import logging
import math
import socket
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from typing import TYPE_CHECKING, Any

import numpy as np

from ppp_dist.errors import DatabaseError
from ppp_dist.io.graph_store import GraphStore
from ppp_dist.ops.union_find import UnionFind, apply_table, edge_table, merge_tables

if TYPE_CHECKING:
    from ppp_dist.pipeline.settings import AssemblySettings

logger = logging.getLogger(__name__)

STAGE = "agglomerate"
INSTANCES_STAGE = "instances"  # ledger row (block 0) with the instance count of the pipeline's agglomeration
BLOCKS_PER_LEAF, FAN_IN = 64, 8  # the stitch tree: blocks per leaf task, children per merge task
MWS_BYTES_PER_EDGE = 40  # driver memory of the in-memory mutex watershed per edge (arrays + sort + kernel)


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
# The tree of tasks


def _compute(client: Any, task: Any) -> Any:
    """Run a dask delayed graph on ``client`` (None: in this process, synchronously)."""
    import dask

    if client is not None:
        return client.compute(task).result()
    from ppp_dist.pipeline.worker import close_worker_stores

    try:
        return dask.compute(task, scheduler="sync")[0]
    finally:
        close_worker_stores()


def _tree(leaves: list[Any], fan_in: int) -> tuple[Any, int]:
    """The root of a reduction of merge tables over ``leaves`` (dask delayed) and the number of tasks."""
    import dask

    tasks, level = len(leaves), leaves
    while len(level) > 1:
        level = [dask.delayed(_merge, pure=False)(level[k:k + fan_in]) for k in range(0, len(level), fan_in)]
        tasks += len(level)
    if not level:
        return dask.delayed(_empty_table)(), 0
    return level[0], tasks


def _empty_table() -> tuple[np.ndarray, np.ndarray, int]:
    return np.zeros(0, np.int64), np.zeros(0, np.int64), 0


def _merge(children: list[tuple[np.ndarray, np.ndarray, int]]) -> tuple[np.ndarray, np.ndarray, int]:
    nodes, reps = merge_tables([(c[0], c[1]) for c in children])
    return nodes, reps, sum(c[2] for c in children)


def _table(parts: list[tuple[np.ndarray, np.ndarray]]) -> tuple[np.ndarray, np.ndarray, int]:
    if not parts:
        return _empty_table()
    u, v = np.concatenate([p[0] for p in parts]), np.concatenate([p[1] for p in parts])
    nodes, reps = edge_table(u, v)
    return nodes, reps, len(u)


def _edge_leaf(store_factory: Callable[[], GraphStore], first: int, stop: int, threshold: float, batch_size: int,
               tier: int | None = None) -> tuple[np.ndarray, np.ndarray, int]:
    """Merge table of the fragment-graph edges above ``threshold`` written by blocks ``first <= block < stop``."""
    from ppp_dist.pipeline.worker import worker_store

    store = worker_store(store_factory)
    return _table([(b.u, b.v) for b in store.iter_edges(batch_size, min_weight=threshold, blocks=(first, stop),
                                                        tier=tier)])


def _leaves(block_range: tuple[int, int] | None, blocks_per_leaf: int, fn: Callable, *args: Any) -> list[Any]:
    import dask

    if blocks_per_leaf < 1:
        raise ValueError(f"blocks_per_leaf must be >= 1, got {blocks_per_leaf}")
    if block_range is None:
        return []
    lo, hi = block_range
    return [dask.delayed(fn, pure=False)(*args[:1], first, first + blocks_per_leaf, *args[1:])
            for first in range(lo, hi + 1, blocks_per_leaf)]


def agglomerate_hierarchical(store: GraphStore, store_factory: Callable[[], GraphStore], *, edge_threshold: float,
                             blocks_per_leaf: int = 64, fan_in: int = 8, batch_size: int = 1_000_000,
                             client: Any = None, tier: int | None = None) -> AgglomerateSummary:
    """Like :func:`agglomerate`, reduced as a tree of dask tasks (leaves = ranges of block ids).

    Parameters
    ----------
    store : GraphStore
        The driver's store: reads the fragment ids and the block range, writes the LUT.
    store_factory : callable
        Picklable zero-argument callable returning a store, used by the tasks on the workers
        (e.g. :class:`ppp_dist.io.stores.StoreFactory`).
    blocks_per_leaf, fan_in : int
        Leaf size in blocks and the number of children per merge task.
    client : distributed.Client, optional
        Runs the tasks on its cluster; ``None`` runs them in this process (synchronous scheduler).
    tier : 1 or 2, optional
        Merge only over tier-1 (or tier-2) edges.
    """
    threshold = _check_threshold(edge_threshold)
    if fan_in < 2:
        raise ValueError(f"fan_in must be >= 2, got {fan_in}")
    started = time.perf_counter()
    leaves = _leaves(store.block_range("edges"), blocks_per_leaf, _edge_leaf, store_factory, threshold, batch_size,
                     tier)
    root, tasks = _tree(leaves, fan_in)
    nodes, reps, n_edges = _compute(client, root)
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


# ---------------------------------------------------------------------------------------------------------
# The pipeline: the contracted graph of the two-tier partition -> instances


def _link_leaf(store_factory: Callable[[], GraphStore], first: int, stop: int, batch_size: int
               ) -> tuple[np.ndarray, np.ndarray, int]:
    """Merge table of the cross-block attractive links written by blocks ``first <= block < stop``."""
    from ppp_dist.pipeline.worker import worker_store

    return _table(list(worker_store(store_factory).iter_attract_pairs((first, stop), batch_size)))


def _write_segments(store_factory: Callable[[], GraphStore], root: tuple[np.ndarray, np.ndarray, int]
                    ) -> dict[str, int]:
    """The stitch's root: store the merge table as the ``segments`` table (runs on a worker)."""
    from ppp_dist.pipeline.worker import worker_store

    nodes, reps, n_links = root
    worker_store(store_factory).write_segments(nodes, reps)
    return {"attract_links": int(n_links), "stitched_clusters": int(len(nodes)),
            "stitch_merges": int(len(nodes) - len(np.unique(reps)))}


def _tier2_groups(store_factory: Callable[[], GraphStore]) -> np.ndarray:
    """Split the tier-2 links into independent groups of segments; returns the links per group (on a worker)."""
    from ppp_dist.ops.union_find import connected_components
    from ppp_dist.pipeline.worker import worker_store

    store = worker_store(store_factory)
    t2 = store.tier2_links()
    nodes, reps = connected_components(t2.a, t2.b)
    _, group = np.unique(reps, return_inverse=True)
    store.write_tier2_groups(nodes, group)
    if not len(nodes):
        return np.zeros(0, np.int64)
    return np.bincount(group[np.searchsorted(nodes, t2.a)], minlength=int(group.max()) + 1).astype(np.int64)


def _tier2_batch(store_factory: Callable[[], GraphStore], first: int, stop: int, threshold: float) -> int:
    """Phase 2 of groups ``first <= grp < stop``: merge_tier2 with their mutexes; returns the merges."""
    from ppp_dist.ops.partition import merge_tier2
    from ppp_dist.pipeline.worker import worker_store

    store = worker_store(store_factory)
    b = store.tier2_batch(first, stop)
    nodes = np.unique(np.concatenate([b.a, b.b]))
    roots = merge_tier2(nodes, b.mutex_a, b.mutex_b, b.a, b.b, b.weight, b.u, b.v, threshold=threshold)
    store.write_tier2_roots(nodes, roots)
    return int(np.count_nonzero(roots != nodes))


def _number_instances(store_factory: Callable[[], GraphStore], *done: Any) -> int:
    from ppp_dist.pipeline.worker import worker_store

    return worker_store(store_factory).build_instances()


def _batches(per_group: np.ndarray, target: int) -> list[tuple[int, int]]:
    """Contiguous ranges of groups with about ``target`` tier-2 links each."""
    out, first, acc = [], 0, 0
    for g, n in enumerate(per_group.tolist()):
        acc += n
        if acc >= target:
            out.append((first, g + 1))
            first, acc = g + 1, 0
    if first < len(per_group):
        out.append((first, len(per_group)))
    return out


def _two_tier(store: GraphStore, store_factory: Callable[[], GraphStore], client: Any, threshold: float,
              blocks_per_leaf: int, fan_in: int, batch_size: int, tier2_batch_links: int) -> dict[str, Any]:
    import dask

    leaves = _leaves(store.block_range("links"), blocks_per_leaf, _link_leaf, store_factory, batch_size)
    root, tasks = _tree(leaves, fan_in)
    counts: dict[str, Any] = dict(_compute(client, dask.delayed(_write_segments, pure=False)(store_factory, root)))
    per_group = _compute(client, dask.delayed(_tier2_groups, pure=False)(store_factory))
    batches = _batches(per_group, tier2_batch_links)
    merges = [dask.delayed(_tier2_batch, pure=False)(store_factory, a, b, threshold) for a, b in batches]
    counts["tier2_merges"] = int(sum(_compute(client, dask.delayed(list)(merges)))) if merges else 0
    counts.update(stitch_tasks=tasks, tier2_groups=len(per_group), tier2_links=int(per_group.sum()),
                  tier2_tasks=len(batches))
    counts["instances"] = int(_compute(client, dask.delayed(_number_instances, pure=False)(store_factory)))
    return counts


def mws_memory_bytes(edges: int) -> int:
    """Driver memory of the in-memory mutex watershed for ``edges`` edges (~40 bytes each)."""
    return MWS_BYTES_PER_EDGE * int(edges)


def _mutex_watershed(store: GraphStore, threshold: float, batch_size: int, budget_gib: float) -> dict[str, Any]:
    from ppp_dist.errors import ConfigError
    from ppp_dist.ops.partition import partition

    n_edges = store.num_edges()
    need = mws_memory_bytes(n_edges)
    if need > budget_gib * 2 ** 30:
        raise ConfigError(f"the mutex watershed needs the whole graph in the driver's memory: {n_edges:,} edges, "
                          f"about {need / 2 ** 30:.1f} GiB, over [vote] mws_max_memory_gib = {budget_gib:g}; use "
                          "partition = 'connected_components' (contracted per block), or raise the budget on a "
                          "machine with that much memory")
    ids = store.cluster_ids()
    parts = list(store.iter_edges(batch_size))
    u = np.concatenate([b.u for b in parts]) if parts else np.zeros(0, np.int64)
    v = np.concatenate([b.v for b in parts]) if parts else np.zeros(0, np.int64)
    w = np.concatenate([b.weight for b in parts]) if parts else np.zeros(0, np.float64)
    c = np.concatenate([b.count for b in parts]) if parts else np.zeros(0, np.int64)
    del parts
    pairs = np.stack([np.searchsorted(ids, u), np.searchsorted(ids, v)], axis=1).astype(np.int64)
    if len(pairs) and (pairs.max() >= len(ids) or not (ids[pairs[:, 0]] == u).all()
                       or not (ids[pairs[:, 1]] == v).all()):
        raise _missing_fragment_error("an edge names a patch which is not", store.where)
    labels = partition(len(ids), pairs, w, np.abs(c), np.where(c > 0, 1, 2), method="mutex_watershed",
                       threshold=threshold)
    if len(ids):
        store.write_instances(ids, labels)
    else:
        store.clear_agglomeration()
    return {"edges_in_memory": len(u), "instances": int(labels.max()) if len(labels) else 0}


def agglomerate_instances(store: GraphStore, settings: AssemblySettings, *,
                          store_factory: Callable[[], GraphStore] | None = None,
                          client: Any = None, agglomeration: str = "auto", blocks_per_leaf: int | None = None,
                          fan_in: int | None = None, batch_size: int = 1_000_000, tier2_batch_links: int = 1_000_000,
                          mws_max_memory_gib: float = 16.0) -> dict[str, Any]:
    """The vote stage's graph -> the ``instances`` table (cluster -> final instance id 1..n); see the module doc.

    Parameters
    ----------
    store : the driver's store (for the mutex watershed it reads the whole graph).
    settings : ``AssemblySettings`` (partition, edge_threshold).
    store_factory : picklable recipe of the store for the tasks (required for connected_components).
    client : distributed.Client, or None to run the tasks in this process.
    agglomeration : "flat" stitches in one task; "hierarchical" and "auto" as a tree of tasks over leaves of
        ``blocks_per_leaf`` blocks with ``fan_in`` children per merge (default BLOCKS_PER_LEAF, FAN_IN).
    """
    started = time.perf_counter()
    blocks_per_leaf = BLOCKS_PER_LEAF if blocks_per_leaf is None else blocks_per_leaf
    fan_in = FAN_IN if fan_in is None else fan_in
    threshold = _check_threshold(settings.edge_threshold)
    if agglomeration not in ("auto", "flat", "hierarchical"):
        raise ValueError(f"agglomeration must be auto, flat or hierarchical; got {agglomeration!r}")
    store.clear_agglomeration()
    if settings.partition == "mutex_watershed":
        method = "mutex_watershed (in memory)"
        counts = _mutex_watershed(store, threshold, batch_size, mws_max_memory_gib)
    else:
        if store_factory is None:
            raise ValueError("the two-tier stitch runs as tasks: give store_factory (e.g. a StoreFactory)")
        factory = store_factory
        if agglomeration == "flat":
            blocks_per_leaf = 2 ** 62
        method = f"two-tier stitch ({'one task' if agglomeration == 'flat' else 'tree of tasks'})"
        counts = _two_tier(store, factory, client, threshold, blocks_per_leaf, fan_in, batch_size,
                           tier2_batch_links)
    n = int(counts["instances"])
    if n >= 2 ** 32:
        from ppp_dist.errors import ConfigError

        raise ConfigError(f"{n} instances do not fit uint32 labels; use a larger edge_threshold or a smaller ROI")
    seconds = time.perf_counter() - started
    clusters = store.num_clusters()
    counts = {"clusters": clusters, **counts, "seconds": seconds}
    store.mark_done(STAGE, 0, {"clusters": clusters, "instances": n}, seconds=seconds, worker=socket.gethostname())
    store.mark_done(INSTANCES_STAGE, 0, counts, seconds=seconds, worker=socket.gethostname())
    logger.info("agglomerate (%s, weight > %g): %d clusters -> %d instances in %.1f s", method, threshold, clusters,
                n, seconds)
    return {"method": method, **counts}


__all__ = ["AgglomerateSummary", "INSTANCES_STAGE", "agglomerate", "agglomerate_hierarchical", "agglomerate_instances",
           "mws_memory_bytes"]
