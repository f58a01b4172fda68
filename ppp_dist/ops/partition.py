"""Partition of the patch graph into instances (ppp_reference §4.8).

Edges come in two tiers (patch_graph.py): tier 1 rests on consensus of patches centred on
non-overlap voxels (reliable), tier 2 only on the fallback consensus of overlap-centred patches (it
bridges an instance cut by a crossing, but may also claim that two crossing instances are one).
Tier-2 evidence may only join clusters that no tier-1 evidence separates:

* ``"connected_components"``: union over the tier-1 edges with weight > threshold (strictly: weight
  0 is no net evidence) — exactly connected components; then every tier-1 edge with weight <=
  threshold becomes a mutex; then the tier-2 edges with weight > threshold, by descending weight,
  merge clusters unless a mutex separates them.
* ``"mutex_watershed"``: the tier-1 edges by descending priority |w - threshold| (attractive if
  w > threshold, else repulsive), then the tier-2 edges likewise; O(E log E) sort plus union-find
  with per-cluster mutex lists.

Ties are broken by the node pair. Every node is in the output, including nodes without any positive
edge (their own instance: bug 12 of the original). Instance ids are 1..n, ordered by the smallest node
index of each instance (nodes are sorted by centre linear index: deterministic, block independent).
"""

from __future__ import annotations

import numpy as np

from ppp_dist.ops import _graph_kernels as _g

PARTITIONS = ("connected_components", "mutex_watershed")


def partition(n_nodes: int, pairs: np.ndarray, weights: np.ndarray, counts: np.ndarray | None = None,
              tiers: np.ndarray | None = None, *, method: str = "connected_components",
              threshold: float = 0.0) -> np.ndarray:
    """(n_nodes,) int64 instance id (1..n) of every node. Edges with counts == 0 or tier 0 are ignored;
    without ``tiers`` every edge is tier 1."""
    if method not in PARTITIONS:
        raise ValueError(f"partition must be one of {PARTITIONS}; got {method!r}")
    pairs = np.ascontiguousarray(pairs, dtype=np.int64).reshape(-1, 2)
    weights = np.asarray(weights, dtype=np.float64)
    if weights.shape != (len(pairs),):
        raise ValueError(f"weights must have one entry per pair ({len(pairs)}); got {weights.shape}")
    if np.isnan(weights).any():
        raise ValueError("edge weights contain NaN")
    if len(pairs) and (pairs.min() < 0 or pairs.max() >= n_nodes):
        raise ValueError(f"pairs reference nodes outside [0, {n_nodes})")
    tiers = np.ones(len(pairs), dtype=np.int64) if tiers is None else np.asarray(tiers, dtype=np.int64)
    if counts is not None:
        tiers = np.where(np.asarray(counts) > 0, tiers, 0)
    attractive = weights > threshold
    prio = np.abs(weights - threshold)
    if method == "connected_components":
        # group: 0 = tier-1 attractive, 1 = tier-1 repulsive, 2 = tier-2 attractive; tier-2 repulsive unused.
        # Only group 2 needs an order: the unions of group 0 and the mutexes of group 1 give the same
        # clusters (roots = smallest node) and the same mutex answers in any order
        group = np.where(tiers == 1, np.where(attractive, 0, 1), np.where(attractive, 2, 3))
        group[tiers == 0] = 3
        t2 = np.flatnonzero(group == 2)
        order = np.concatenate([np.flatnonzero(group == 0), np.flatnonzero(group == 1),
                                t2[np.lexsort((pairs[t2, 1], pairs[t2, 0], -prio[t2]))]])
    else:
        group = np.where(tiers == 0, 3, tiers)
        idx = np.flatnonzero(group < 3)
        order = idx[np.lexsort((pairs[idx, 1], pairs[idx, 0], -prio[idx], group[idx]))]
    roots = _g.mutex_watershed(int(n_nodes), pairs, attractive, order.astype(np.int64))
    return relabel_roots(roots)


def merge_tier2(nodes: np.ndarray, mutex_a: np.ndarray, mutex_b: np.ndarray, t2_a: np.ndarray, t2_b: np.ndarray,
                t2_weights: np.ndarray, t2_u: np.ndarray, t2_v: np.ndarray, *, threshold: float = 0.0) -> np.ndarray:
    """Phase 2 of the two-tier connected components on the clusters of phase 1 (exactly the kernel's).

    Parameters
    ----------
    nodes : (N,) int64
        Cluster ids (the smallest patch id of each phase-1 cluster), ascending.
    mutex_a, mutex_b : (M,) int64
        Clusters that a tier-1 edge with weight <= threshold separates (any order, duplicates allowed).
    t2_a, t2_b : (T,) int64
        Clusters that a tier-2 edge with weight > threshold joins.
    t2_weights, t2_u, t2_v : (T,)
        That edge's weight and patch ids: the merge order is (-|w - threshold|, u, v), as ``partition``'s.

    Returns
    -------
    (N,) int64: the smallest cluster id of each node's merged cluster.
    """
    nodes = np.asarray(nodes, dtype=np.int64)
    if len(nodes) > 1 and not (nodes[1:] > nodes[:-1]).all():
        raise ValueError("nodes must be strictly ascending")

    def dense(x: np.ndarray) -> np.ndarray:
        x = np.asarray(x, dtype=np.int64)
        pos = np.searchsorted(nodes, x)
        if len(x) and ((pos >= len(nodes)) | (nodes[np.minimum(pos, len(nodes) - 1)] != x)).any():
            raise ValueError("a mutex or tier-2 edge names a cluster that is not among nodes")
        return pos.astype(np.int64)

    mutex = np.stack([dense(mutex_a), dense(mutex_b)], axis=1).reshape(-1, 2)
    t2 = np.stack([dense(t2_a), dense(t2_b)], axis=1).reshape(-1, 2)
    prio = np.abs(np.asarray(t2_weights, dtype=np.float64) - float(threshold))
    t2_order = np.lexsort((np.asarray(t2_v, np.int64), np.asarray(t2_u, np.int64), -prio))
    pairs = np.concatenate([mutex, t2]).astype(np.int64)
    attractive = np.concatenate([np.zeros(len(mutex), bool), np.ones(len(t2), bool)])
    order = np.concatenate([np.arange(len(mutex)), len(mutex) + t2_order]).astype(np.int64)
    roots = _g.mutex_watershed(len(nodes), pairs, attractive, order)
    return nodes[roots]


def relabel_roots(roots: np.ndarray) -> np.ndarray:
    """Map representatives to 1..n in ascending order of representative."""
    _, inverse = np.unique(roots, return_inverse=True)
    return (inverse + 1).astype(np.int64)
