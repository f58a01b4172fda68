"""Union-find (disjoint sets) over int64 fragment ids, in numba: the core of agglomeration.

Ids are mapped to dense indices by searching the sorted unique id array (no hash map, no array indexed by
raw id — ids are sparse, e.g. ``block << 32 | local``); each batch is sorted first and searched by galloping
forward, so the look-ups walk the ids almost sequentially (4x faster than random binary searches at 5e6 ids).
Memory: 8 bytes per id + 8 (parent) + 1 (rank) per node, plus ~40 bytes per edge of the current
batch; edges are never stored, so the edge count only costs time.

Canonical result: every node's segment id is the **smallest fragment id in its component**, whatever the
order of the edges or batches (invariant 4: determinism). Union by rank + path compression.

Hierarchical reduction (for graphs whose edges are too many for one pass, or to run in parallel as dask
tasks, see :func:`ppp_dist.pipeline.agglomerate.agglomerate_hierarchical`): a *merge table* is a pair of int64
arrays ``(nodes, reps)`` — sorted unique node ids and the smallest id of each one's component, restricted
to nodes that occur in some edge. :func:`edge_table` turns an edge batch into a table;
:func:`merge_tables` combines tables of disjoint edge sets into the table of their union (equivalence
relations are closed under union + transitive closure, so any tree of merges gives the flat result);
:func:`apply_table` maps any ids (isolated ones to themselves).

Examples
--------
>>> import numpy as np
>>> uf = UnionFind(np.array([40, 7, 12, 99, 5]))
>>> uf.union(np.array([40, 12]), np.array([12, 99]))
2
>>> uf.ids.tolist(), uf.labels().tolist()
([5, 7, 12, 40, 99], [5, 7, 12, 12, 12])
>>> nodes, reps = merge_tables([edge_table(np.array([40]), np.array([12])), edge_table(np.array([99]), np.array([40]))])
>>> apply_table(np.array([5, 12, 40, 99]), nodes, reps).tolist()
[5, 12, 12, 12]
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
from numba import njit


@njit(cache=True, nogil=True)
def _find(parent: np.ndarray, i: int) -> int:
    root = i
    while parent[root] != root:
        root = parent[root]
    while parent[i] != root:  # path compression
        nxt = parent[i]
        parent[i] = root
        i = nxt
    return root


@njit(cache=True, nogil=True)
def _sorted_positions(ids: np.ndarray, keys: np.ndarray) -> np.ndarray:
    """``np.searchsorted(ids, keys)`` for ascending ``keys``: gallop forward from the previous position.

    Each search costs O(log gap) on memory next to the previous one, instead of a fresh binary search
    over the whole id array.
    """
    n = ids.shape[0]
    out = np.empty(keys.shape[0], np.int64)
    lo = 0
    for k in range(keys.shape[0]):
        key = keys[k]
        step = 1
        hi = lo
        while hi < n and ids[hi] < key:  # gallop: find hi with ids[hi] >= key
            lo = hi + 1
            hi = lo + step
            step *= 2
        if hi > n:
            hi = n
        while lo < hi:  # binary search in [lo, hi)
            mid = (lo + hi) >> 1
            if ids[mid] < key:
                lo = mid + 1
            else:
                hi = mid
        out[k] = lo
    return out


@njit(cache=True, nogil=True)
def _union_dense(parent: np.ndarray, rank: np.ndarray, a: np.ndarray, b: np.ndarray) -> int:
    """Union the pairs (a[k], b[k]) of dense indices; returns the number of merges."""
    merges = 0
    for k in range(a.shape[0]):
        ra = _find(parent, a[k])
        rb = _find(parent, b[k])
        if ra == rb:
            continue
        if rank[ra] < rank[rb]:
            ra, rb = rb, ra
        parent[rb] = ra
        if rank[ra] == rank[rb]:
            rank[ra] += 1
        merges += 1
    return merges


@njit(cache=True, nogil=True)
def _min_labels(ids: np.ndarray, parent: np.ndarray) -> np.ndarray:
    """Segment id of every node: the smallest id (= smallest dense index, ids are sorted) of its set."""
    n = parent.shape[0]
    first = np.full(n, -1, np.int64)
    out = np.empty(n, np.int64)
    for i in range(n):
        r = _find(parent, i)
        if first[r] < 0:
            first[r] = i
        out[i] = ids[first[r]]
    return out


def _as_int64(values: np.ndarray, what: str) -> np.ndarray:
    arr = np.asarray(values)
    if arr.dtype.kind not in "ui":
        raise TypeError(f"{what} must be integers, got dtype {arr.dtype}")
    if arr.dtype.kind == "u" and arr.size and int(arr.max()) > np.iinfo(np.int64).max:
        raise ValueError(f"{what} {int(arr.max())} does not fit int64; ids must be below 2**63")
    return np.ascontiguousarray(arr.ravel(), dtype=np.int64)


class UnionFind:
    """Disjoint sets over a fixed set of int64 ids; edges arrive in batches.

    Parameters
    ----------
    ids : (N,) integer array
        Every node id that edges may name (duplicates and order do not matter).
    """

    def __init__(self, ids: np.ndarray) -> None:
        self.ids = np.unique(_as_int64(ids, "ids"))
        self._parent = np.arange(len(self.ids), dtype=np.int64)
        self._rank = np.zeros(len(self.ids), dtype=np.uint8)
        self.merges = 0
        self.edges_seen = 0

    def __len__(self) -> int:
        return len(self.ids)

    def dense(self, values: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Dense indices of ``values`` in :attr:`ids` and a mask of the values that are not ids.

        The queries are sorted first: binary searches for ascending keys walk the id array almost
        sequentially, ~10x faster than random look-ups once the ids outgrow the CPU caches.
        """
        order = np.argsort(values)
        keys = values[order]
        pos = _sorted_positions(self.ids, keys)
        found = np.zeros(len(keys), dtype=bool)
        if len(self.ids):
            found = self.ids[np.minimum(pos, len(self.ids) - 1)] == keys
        out = np.empty(len(values), dtype=np.int64)
        out[order] = pos
        missing = np.empty(len(values), dtype=bool)
        missing[order] = ~found
        return out, missing

    def union(self, u: np.ndarray, v: np.ndarray) -> int:
        """Join the sets of ``u[k]`` and ``v[k]`` for every k; returns the number of merges.

        Raises ``KeyError`` naming the first edge with an id that is not among ``ids`` (the edges before
        it are applied, none after it).
        """
        ua, va = _as_int64(u, "u"), _as_int64(v, "v")
        if ua.shape != va.shape:
            raise ValueError(f"u and v differ in length: {ua.shape[0]} and {va.shape[0]}")
        a, miss_a = self.dense(ua)
        b, miss_b = self.dense(va)
        bad = miss_a | miss_b
        n = int(np.argmax(bad)) if bad.any() else len(ua)
        merges = _union_dense(self._parent, self._rank, a[:n], b[:n])
        self.merges += merges
        self.edges_seen += n
        if n < len(ua):
            missing = ua[n] if miss_a[n] else va[n]
            raise KeyError(f"edge {int(ua[n])}-{int(va[n])} names id {int(missing)}, which is not a node")
        return int(merges)

    def labels(self) -> np.ndarray:
        """Segment id (smallest id of the component) for every entry of :attr:`ids`."""
        return _min_labels(self.ids, self._parent)

    @property
    def num_components(self) -> int:
        return len(self.ids) - self.merges


def connected_components(u: np.ndarray, v: np.ndarray, ids: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Components of the graph with edges (u[k], v[k]) over ``ids`` (default: the ids edges name).

    Returns
    -------
    ids : (N,) int64, sorted unique
    labels : (N,) int64, the smallest id of each node's component
    """
    u64, v64 = _as_int64(u, "u"), _as_int64(v, "v")
    nodes = np.concatenate([u64, v64]) if ids is None else _as_int64(ids, "ids")
    uf = UnionFind(nodes)
    uf.union(u64, v64)
    return uf.ids, uf.labels()


def edge_table(u: np.ndarray, v: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Merge table (nodes, reps) of one edge set: the leaf of the hierarchical reduction."""
    return connected_components(u, v)


def merge_tables(tables: Sequence[tuple[np.ndarray, np.ndarray]]) -> tuple[np.ndarray, np.ndarray]:
    """Merge tables of several edge sets into the table of their union (an inner node of the reduction).

    Each row (node, rep) is an edge of an equivalence; union-find over all rows closes them transitively.
    The result only has rows for nodes that appear in some input table.
    """
    tables = [t for t in tables if len(t[0])]
    if not tables:
        return np.zeros(0, np.int64), np.zeros(0, np.int64)
    if len(tables) == 1:
        return tables[0]
    nodes = np.concatenate([t[0] for t in tables])
    reps = np.concatenate([t[1] for t in tables])
    return connected_components(nodes, reps)


def apply_table(ids: np.ndarray, nodes: np.ndarray, reps: np.ndarray) -> np.ndarray:
    """Segment id of each of ``ids`` given a merge table; ids not in the table map to themselves."""
    ids64 = _as_int64(ids, "ids")
    out = ids64.copy()
    if len(nodes) == 0 or len(ids64) == 0:
        return out
    pos = np.searchsorted(nodes, ids64)
    pos_c = np.minimum(pos, len(nodes) - 1)
    hit = nodes[pos_c] == ids64
    out[hit] = reps[pos_c[hit]]
    return out


__all__ = ["UnionFind", "apply_table", "connected_components", "edge_table", "merge_tables"]
