"""Agglomeration of the vote stage's patch graph into the final instance ids (the LUT).

The whole-volume partition (``ops.partition``) is reproduced exactly from the graph DB:

* ``connected_components`` (two tiers): union-find over tier-1 edges (``count > 0``) with
  ``weight > threshold``; tier-1 edges with ``weight <= threshold`` are mutexes; then the tier-2 edges
  (``count < 0``) with ``weight > threshold``, by descending weight (ties: smaller (u, v) first), merge
  two clusters unless a mutex separates them. Phase 1 streams the edges (``ppp_dist.agglomerate`` when the
  graph has no tier-2 edge above the threshold, else the same union-find here); phase 2 only touches the
  clusters that tier-2 edges join, and the mutexes between those (a second streamed pass, only when
  tier-2 edges exist — they come from overlap voxels).
* ``mutex_watershed``: the whole graph is read into memory and ``ops.partition`` runs on it (exact; the
  edges must fit in the driver's memory: ~40 bytes per edge).

Instance id = rank (1..n) of the smallest patch id of the instance, which is the smallest patch-centre
linear index, exactly the ids of ``ops.assemble`` before its empty/small-instance compaction (done by the
paint stage). The LUT table is replaced by fragment -> instance id and a ledger row
``("instances", 0)`` records the count.
"""

from __future__ import annotations

import logging
import socket
import time
from typing import Any, Callable

import numpy as np

from ppp_dist.io.graph_store import GraphStore
from ppp_dist.pipeline.settings import AssemblySettings

logger = logging.getLogger(__name__)

STAGE = "instances"
HIERARCHICAL_MIN_EDGES = 20_000_000  # [vote] agglomeration = "auto": above this, the tree of tasks on the workers


def _ranks(segments: np.ndarray) -> np.ndarray:
    """Segment ids (smallest member id) -> 1..n in ascending order."""
    _, inverse = np.unique(segments, return_inverse=True)
    return (inverse.astype(np.int64) + 1).reshape(segments.shape)


def _find(parent: dict, x: int) -> int:
    root = x
    while parent[root] != root:
        root = parent[root]
    while parent[x] != root:
        parent[x], x = root, parent[x]
    return root


def _tier2_phase(store: GraphStore, ids: np.ndarray, segments: np.ndarray, t2: np.ndarray, threshold: float,
                 batch_size: int) -> np.ndarray:
    """Phase 2 of the two-tier partition on the clusters ``segments`` (smallest id per cluster)."""
    def seg_of(x: np.ndarray) -> np.ndarray:
        return segments[np.searchsorted(ids, x)]

    su, sv = seg_of(t2["u"]), seg_of(t2["v"])
    cross = su != sv
    touched = np.unique(np.concatenate([su[cross], sv[cross]]))
    if not len(touched):
        return segments
    mutex: dict[int, set[int]] = {int(s): set() for s in touched}
    for batch in store.iter_edges(batch_size):
        rep = (batch.count > 0) & (batch.weight <= threshold)
        if not rep.any():
            continue
        a, b = seg_of(batch.u[rep]), seg_of(batch.v[rep])
        ok = (a != b) & np.isin(a, touched) & np.isin(b, touched)
        for x, y in zip(a[ok].tolist(), b[ok].tolist()):
            mutex[x].add(y)
            mutex[y].add(x)
    # tier-2 attractive edges by descending weight - threshold, then (u, v), as ops.partition orders them
    # (edges inside one phase-1 cluster are no-ops: skipped here as the kernel skips them)
    order = np.lexsort((t2["v"], t2["u"], -np.abs(t2["weight"] - threshold)))
    order = order[cross[order]]
    parent = {int(s): int(s) for s in touched}
    for k in order.tolist():
        a, b = _find(parent, int(su[k])), _find(parent, int(sv[k]))
        if a == b:
            continue
        small, large = (mutex[a], mutex[b]) if len(mutex[a]) <= len(mutex[b]) else (mutex[b], mutex[a])
        other = b if small is mutex[a] else a
        if any(_find(parent, m) == other for m in small):
            continue
        lo, hi = (a, b) if a < b else (b, a)
        parent[hi] = lo
        mutex[lo] = {_find(parent, m) for m in mutex[lo] | mutex[hi]}
        del mutex[hi]
    new = {s: _find(parent, s) for s in parent}
    touched_arr = np.fromiter(new.keys(), dtype=np.int64, count=len(new))
    root_arr = np.fromiter(new.values(), dtype=np.int64, count=len(new))
    order = np.argsort(touched_arr)
    touched_arr, root_arr = touched_arr[order], root_arr[order]
    pos = np.searchsorted(touched_arr, segments)
    pos = np.minimum(pos, len(touched_arr) - 1)
    hit = touched_arr[pos] == segments
    out = segments.copy()
    out[hit] = root_arr[pos[hit]]
    return out


def _tier2_attractive(store: GraphStore, threshold: float) -> int:
    return int(store.db.execute("SELECT count(*) FROM edges WHERE count < 0 AND weight > ?", (float(threshold),))[0][0])


_T2_DTYPE = [("u", "<i8"), ("v", "<i8"), ("weight", "<f8")]


def _t2_part(u: np.ndarray, v: np.ndarray, weight: np.ndarray) -> np.ndarray:
    part = np.zeros(len(u), dtype=_T2_DTYPE)
    part["u"], part["v"], part["weight"] = u, v, weight
    return part


def _finish_two_tier(store: GraphStore, ids: np.ndarray, segments: np.ndarray, t2_parts: list[np.ndarray],
                     threshold: float, batch_size: int) -> tuple[np.ndarray, np.ndarray, dict]:
    """Phase 2 of the two-tier partition on the phase-1 clusters, given the tier-2 edges above the threshold."""
    from ppp_dist.agglomerate import _missing_fragment_error

    t2 = np.concatenate(t2_parts) if t2_parts else np.zeros(0, dtype=_T2_DTYPE)
    if len(t2):
        known = np.isin(t2["u"], ids) & np.isin(t2["v"], ids)
        if not known.all():
            raise _missing_fragment_error(f"an edge names fragment {int(t2['u'][~known][0])}, which is not",
                                          store.where)
        segments = _tier2_phase(store, ids, segments, t2, threshold, batch_size)
    return ids, segments, {"tier2_edges_above_threshold": len(t2)}


def _two_tier(store: GraphStore, threshold: float, batch_size: int) -> tuple[np.ndarray, np.ndarray, dict]:
    """Phase 1 (tier-1 union-find) on the driver, collecting the tier-2 edges in the same pass."""
    from ppp_dist.agglomerate import _missing_fragment_error
    from ppp_dist.ops.union_find import UnionFind

    uf = UnionFind(store.fragment_ids(batch_size))
    t2_parts = []
    for batch in store.iter_edges(batch_size, min_weight=threshold):
        tier1 = batch.count > 0
        try:
            uf.union(batch.u[tier1], batch.v[tier1])
        except KeyError as err:
            raise _missing_fragment_error(err.args[0], store.where) from err
        if not tier1.all():
            t2_parts.append(_t2_part(batch.u[~tier1], batch.v[~tier1], batch.weight[~tier1]))
    return _finish_two_tier(store, uf.ids, uf.labels(), t2_parts, threshold, batch_size)


def _two_tier_hierarchical(store: GraphStore, store_factory: Callable[[], GraphStore], client: Any,
                           threshold: float, batch_size: int) -> tuple[np.ndarray, np.ndarray, dict]:
    """``_two_tier`` with phase 1 as the hierarchical tree of dask tasks over the tier-1 edges; the driver
    then streams only the tier-2 edges above the threshold (and, in phase 2, the mutexes)."""
    from ppp_dist import agglomerate as agg

    agg.agglomerate_hierarchical(store, store_factory, edge_threshold=threshold, client=client,
                                 batch_size=batch_size, tier=1)
    ids, segments = store.read_lut()
    t2_parts = [_t2_part(b.u, b.v, b.weight) for b in store.iter_edges(batch_size, min_weight=threshold, tier=2)]
    return _finish_two_tier(store, ids, segments, t2_parts, threshold, batch_size)


def _mutex_watershed(store: GraphStore, threshold: float, batch_size: int) -> tuple[np.ndarray, np.ndarray, dict]:
    from ppp_dist.ops.partition import partition

    ids = store.fragment_ids(batch_size)
    us, vs, ws, cs = [], [], [], []
    for batch in store.iter_edges(batch_size):
        us.append(batch.u)
        vs.append(batch.v)
        ws.append(batch.weight)
        cs.append(batch.count)
    u = np.concatenate(us) if us else np.zeros(0, np.int64)
    v = np.concatenate(vs) if vs else np.zeros(0, np.int64)
    w = np.concatenate(ws) if ws else np.zeros(0, np.float64)
    c = np.concatenate(cs) if cs else np.zeros(0, np.int64)
    pairs = np.stack([np.searchsorted(ids, u), np.searchsorted(ids, v)], axis=1).astype(np.int64)
    if len(pairs) and (pairs.max() >= len(ids) or not (ids[pairs[:, 0]] == u).all()
                       or not (ids[pairs[:, 1]] == v).all()):
        from ppp_dist.agglomerate import _missing_fragment_error

        raise _missing_fragment_error("an edge names a fragment which is not", store.where)
    labels = partition(len(ids), pairs, w, np.abs(c), np.where(c > 0, 1, 2), method="mutex_watershed",
                       threshold=threshold)
    # partition's ids are already 1..n by smallest node; return them as "segments" (ranked below again)
    return ids, labels, {"edges_in_memory": len(u)}


def agglomerate_instances(store: GraphStore, settings: AssemblySettings, *, store_factory: Callable[[], GraphStore]
                          | None = None, client: Any = None, agglomeration: str = "flat",
                          batch_size: int = 1_000_000) -> dict[str, Any]:
    """Fragments + edges of the vote stage -> LUT fragment -> final instance id (1..n); see the module doc.

    ``agglomeration`` ([vote] agglomeration): with "hierarchical", or "auto" and more than
    ``HIERARCHICAL_MIN_EDGES`` edges, the union-find (phase 1 over the tier-1 edges when there are tier-2
    edges above the threshold) runs as ``ppp_dist.agglomerate.agglomerate_hierarchical`` on ``client``;
    the result is the same.
    """
    from ppp_dist import agglomerate as agg

    started = time.perf_counter()
    threshold = float(settings.edge_threshold)
    extra: dict[str, Any] = {}
    if settings.partition == "mutex_watershed":
        method = "mutex_watershed (in memory)"
        ids, segments, extra = _mutex_watershed(store, threshold, batch_size)
    else:
        if agglomeration not in ("auto", "flat", "hierarchical"):
            raise ValueError(f"agglomeration must be auto, flat or hierarchical; got {agglomeration!r}")
        hierarchical = store_factory is not None and (agglomeration == "hierarchical" or (
            agglomeration == "auto" and store.num_edges() > HIERARCHICAL_MIN_EDGES))
        if _tier2_attractive(store, threshold) == 0:
            if hierarchical:
                method = "union-find (hierarchical)"
                agg.agglomerate_hierarchical(store, store_factory, edge_threshold=threshold, client=client,
                                             batch_size=batch_size)
            else:
                method = "union-find"
                agg.agglomerate(store, edge_threshold=threshold, batch_size=batch_size)
            ids, segments = store.read_lut()
        elif hierarchical:
            method = "two-tier union-find (hierarchical)"
            ids, segments, extra = _two_tier_hierarchical(store, store_factory, client, threshold, batch_size)
        else:
            method = "two-tier union-find"
            ids, segments, extra = _two_tier(store, threshold, batch_size)
    final = _ranks(segments) if len(segments) else segments
    if len(ids):
        store.write_lut(ids, final)
    else:
        store.write_lut(np.zeros(0, np.int64), np.zeros(0, np.int64))
    n = int(final.max()) if len(final) else 0
    if n >= 2 ** 32:
        from ppp_dist.errors import ConfigError

        raise ConfigError(f"{n} instances do not fit uint32 labels; use a larger edge_threshold or a smaller ROI")
    seconds = time.perf_counter() - started
    counts = {"fragments": int(len(ids)), "instances": n, "seconds": seconds, **extra}
    store.mark_done("agglomerate", 0, {"fragments": int(len(ids)), "instances": n}, seconds=seconds,
                    worker=socket.gethostname())
    store.mark_done(STAGE, 0, counts, seconds=seconds, worker=socket.gethostname())
    logger.info("agglomerate (%s, weight > %g): %d patches -> %d instances in %.1f s", method, threshold, len(ids),
                n, seconds)
    return {"method": method, **counts}


__all__ = ["STAGE", "agglomerate_instances"]
