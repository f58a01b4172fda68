"""Exact contraction of a block's patch graph for the two-tier connected-components partition.

``ops.partition`` (``"connected_components"``) sees the edges of the patch graph in three groups:

* G0 -- tier-1 edges with ``w > t``: plain union-find, in any order (no mutex exists yet);
* G1 -- tier-1 edges with ``w <= t``: mutexes between the G0 components (one inside a component is dropped);
* G2 -- tier-2 edges with ``w > t``, sorted by ``(-|w - t|, u, v)``: each merges its two clusters unless a
  mutex separates them. Tier-2 edges with ``w <= t`` and edges without votes are ignored.

A block owns the selected patches centred in its core and the edges whose first (smaller-id) patch it owns.
:func:`contract_block` unites its *internal* G0 edges (both patches owned) into local clusters (id = the
smallest patch id) and keeps only what the rest of the volume can still change:

* the clusters (id, number of patches);
* the map patch -> cluster for the owned patches that another block's edge may name (a superset: the
  owned patches with a selected patch of another block within the pair range, ``boundary``);
* the cross-block G0 edges as (cluster of u, v), one per (cluster, v);
* the G1 mutexes as (cluster of u, cluster of v) -- or (cluster of u, v) across blocks --, one per pair,
  dropping those inside one cluster;
* for G2, only the first edge per cluster pair in the kernel's order ``(-|w - t|, u, v)``, with its own
  ``w``, ``u`` and ``v`` (edges inside one cluster dropped).

Why the stitched result equals ``ops.partition`` of the whole graph (docs/pipeline.md has the proof):
union-find does not depend on the order of its unions, every union happens before any mutex is used, and
clusters only grow. Of two G2 edges between the same two clusters, the later one either finds them merged
already or finds the mutex that blocked the first -- mutexes never disappear -- so it changes nothing; the
first keeps its exact key and so its place among ties. Roots are the smallest patch id, so are the ids.

Mutex watershed interleaves attractive and repulsive edges and cannot be contracted this way (a local
merge may be undone by a mutex that comes earlier in the global order): it keeps the full graph.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from ppp_dist.ops import _graph_kernels as _g

ATTRACT, MUTEX, TIER2 = 1, 2, 3
"""Kinds of contracted links: cross-block G0 edge, G1 mutex, first G2 edge of a cluster pair."""

LINK_DTYPE = np.dtype([("a", "<i8"), ("b", "<i8"), ("u", "<i8"), ("v", "<i8"), ("weight", "<f8"),
                       ("kind", "<i8")])
"""One contracted link: ``a`` = cluster of ``u`` (owned), ``b`` = cluster of ``v`` when ``v`` is owned, else 0
(another block's map resolves ``v``); ``u < v`` the patch ids of the edge it stands for, ``weight`` its weight
(float32 value as float64), ``kind`` one of ATTRACT, MUTEX, TIER2."""


@dataclass(frozen=True)
class ContractedBlock:
    """What a block stores of its patch graph (global ids; see the module docstring)."""

    patch_clusters: np.ndarray  # (N,) int64 cluster id of every owned patch (aligned with the patch ids)
    cluster_ids: np.ndarray  # (C,) int64 sorted, the smallest patch id of each cluster
    cluster_sizes: np.ndarray  # (C,) int64 patches per cluster
    map_patches: np.ndarray  # (M,) int64 owned patches that other blocks' links may name, ascending
    map_clusters: np.ndarray  # (M,) int64 their clusters
    links: np.ndarray  # (L,) LINK_DTYPE

    @property
    def rows(self) -> int:
        """Rows this block stores: clusters + map entries + links."""
        return len(self.cluster_ids) + len(self.map_patches) + len(self.links)


def _first_per_key(keys: tuple[np.ndarray, ...], order_keys: tuple[np.ndarray, ...]) -> np.ndarray:
    """Index of the first row of each distinct ``keys`` tuple, rows ordered by ``order_keys`` within a key
    (``np.lexsort`` convention for both: the last array is the primary key)."""
    n = len(keys[0])
    if n == 0:
        return np.zeros(0, dtype=np.int64)
    order = np.lexsort(tuple(order_keys) + tuple(keys))
    first = np.ones(n, dtype=bool)
    same = np.ones(n - 1, dtype=bool)
    for k in keys:
        sk = k[order]
        same &= sk[1:] == sk[:-1]
    first[1:] = ~same
    return order[first]


def contract_block(patch_ids: np.ndarray, u: np.ndarray, v: np.ndarray, weights: np.ndarray,
                   tiers: np.ndarray, *, threshold: float, boundary: np.ndarray) -> ContractedBlock:
    """Contract the patch graph a block owns (exact for the two-tier connected components).

    Parameters
    ----------
    patch_ids : (N,) int64, ascending
        The selected patches centred in the block's core (global node ids).
    u, v : (E,) int64
        The edges the block owns: ``u`` is one of ``patch_ids``, ``u < v``; only edges with votes.
    weights : (E,) float
        Edge weights (float32 values; compared in float64, as ``ops.partition`` does).
    tiers : (E,) int
        1 (primary consensus) or 2 (fallback consensus only).
    threshold : float
        ``edge_threshold``: attractive means ``weight > threshold``.
    boundary : (N,) bool
        Owned patches that an edge of another block may name (a selected patch of another block lies
        within the pair range of it); their clusters go into the map.

    Returns
    -------
    ContractedBlock
    """
    ids = np.ascontiguousarray(patch_ids, dtype=np.int64)
    if len(ids) > 1 and not (ids[1:] > ids[:-1]).all():
        raise ValueError("patch_ids must be strictly ascending")
    u = np.asarray(u, dtype=np.int64)
    v = np.asarray(v, dtype=np.int64)
    w = np.asarray(weights, dtype=np.float64)
    tiers = np.asarray(tiers, dtype=np.int64)
    if not (len(u) == len(v) == len(w) == len(tiers)):
        raise ValueError("u, v, weights and tiers must have the same length")
    if len(u) and not (u < v).all():
        raise ValueError("every edge must have u < v")
    if np.isnan(w).any():
        raise ValueError("edge weights contain NaN")
    if len(ids) != len(np.asarray(boundary)):
        raise ValueError("boundary must have one entry per patch")
    t = float(threshold)
    iu = np.searchsorted(ids, u)
    if len(u) and ((iu >= len(ids)) | (ids[np.minimum(iu, max(len(ids) - 1, 0))] != u)).any():
        raise ValueError("every edge's first patch u must be one of patch_ids (the block owns it)")
    iv = np.minimum(np.searchsorted(ids, v), max(len(ids) - 1, 0))
    v_owned = (ids[iv] == v) if len(ids) else np.zeros(len(v), dtype=bool)
    attractive = w > t
    internal_g0 = (tiers == 1) & attractive & v_owned
    pairs = np.stack([iu, iv], axis=1).astype(np.int64) if len(u) else np.zeros((0, 2), np.int64)
    roots = _g.union_find(len(ids), pairs, internal_g0)  # smallest index = smallest id (ids ascending)
    patch_clusters = ids[roots] if len(ids) else np.zeros(0, np.int64)
    cluster_ids, cluster_sizes = np.unique(patch_clusters, return_counts=True)
    bnd = np.asarray(boundary, dtype=bool)
    a = patch_clusters[iu] if len(u) else np.zeros(0, np.int64)
    b = np.where(v_owned, patch_clusters[iv] if len(ids) else 0, 0).astype(np.int64)
    # the other end: its cluster when owned, else the patch itself (resolved through its block's map);
    # a patch id of another block never equals a cluster id of this one (cluster ids are owned patch ids)
    other = np.where(v_owned, b, v)
    cross_g0 = (tiers == 1) & attractive & ~v_owned
    mutex = (tiers == 1) & ~attractive & (other != a)
    tier2 = (tiers == 2) & attractive & (other != a)
    parts = []
    for kind, mask, order_keys in (
            (ATTRACT, cross_g0, None),
            (MUTEX, mutex, None),
            (TIER2, tier2, "kernel")):
        sel = np.flatnonzero(mask)
        keys: tuple[np.ndarray, ...]
        if order_keys == "kernel":  # the first edge per pair in (-|w - t|, u, v) order
            keys = (v[sel], u[sel], -np.abs(w[sel] - t))
        else:  # any representative: the smallest (u, v)
            keys = (v[sel], u[sel])
        keep = sel[_first_per_key((other[sel], a[sel]), keys)]
        keep.sort()
        part = np.zeros(len(keep), LINK_DTYPE)
        part["a"], part["b"], part["u"], part["v"] = a[keep], b[keep], u[keep], v[keep]
        part["weight"], part["kind"] = w[keep], kind
        parts.append(part)
    links = np.concatenate(parts) if parts else np.zeros(0, LINK_DTYPE)
    return ContractedBlock(patch_clusters, cluster_ids.astype(np.int64), cluster_sizes.astype(np.int64),
                           ids[bnd], patch_clusters[bnd], links)


__all__ = ["ATTRACT", "ContractedBlock", "LINK_DTYPE", "MUTEX", "TIER2", "contract_block"]
