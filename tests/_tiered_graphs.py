"""Random tiered patch graphs for the tests of the contraction and the agglomeration: ids, index pairs (first <
second), float32 weights from a few levels (so ties matter), tiers 1/2 and counts; and a split into blocks."""

from __future__ import annotations

import numpy as np

from ppp_dist.ops.contract import contract_block

LEVELS = np.array([-0.5, -0.1, 0.0, 0.1, 0.2, 0.5, 0.9, 1.0], np.float32)


def random_tiered_graph(seed: int):
    """Patch ids, edges (index pairs, first < second) with few distinct weights (ties matter), tiers, counts."""
    rng = np.random.default_rng(seed)
    n = int(rng.integers(10, 120))
    e = int(rng.integers(n, 5 * n))
    ids = np.sort(rng.choice(np.arange(1, 20 * n), n, replace=False)).astype(np.int64)
    group = rng.integers(0, max(2, n // 6), n)
    a, b = rng.integers(0, n, e), rng.integers(0, n, e)
    close = rng.random(e) < 0.6  # mostly near neighbours in index order, as patches in a volume
    b[close] = np.clip(a[close] + rng.integers(-6, 7, close.sum()), 0, n - 1)
    ok = a != b
    pairs = np.unique(np.sort(np.stack([a[ok], b[ok]], 1), axis=1), axis=0)
    inside = group[pairs[:, 0]] == group[pairs[:, 1]]
    w = np.where(inside, rng.choice(LEVELS[3:], len(pairs)), rng.choice(LEVELS[:5], len(pairs))).astype(np.float32)
    tiers = np.where(rng.random(len(pairs)) < np.where(inside, 0.3, 0.15), 2, 1).astype(np.uint8)
    counts = np.where(rng.random(len(pairs)) < 0.05, 0, rng.integers(1, 5, len(pairs)))
    return ids, pairs, w, tiers, counts


def clustered_tiered_graph(seed: int):
    """Chains of tier-1 attraction (future local clusters), several tier-2 edges between cluster pairs with
    tied weights, and tier-1 mutexes between clusters; owner: whole clusters per block, 10 % of nodes moved."""
    rng = np.random.default_rng(seed)
    k = int(rng.integers(3, 25))
    sizes = rng.integers(1, 6, k)
    n = int(sizes.sum())
    ids = np.sort(rng.choice(np.arange(1, 20 * n), n, replace=False)).astype(np.int64)
    start = np.concatenate([[0], np.cumsum(sizes)[:-1]])
    edges = {}
    for c in range(k):
        for i in range(start[c], start[c] + sizes[c] - 1):
            edges[(i, i + 1)] = (0.9, 1)

    def member(c):
        return int(start[c] + rng.integers(0, sizes[c]))

    for _ in range(int(rng.integers(k, 4 * k))):
        c1, c2 = rng.integers(0, k, 2)
        for _ in range(int(rng.integers(1, 4)) if c1 != c2 else 0):
            a, b = member(c1), member(c2)
            edges[(min(a, b), max(a, b))] = (float(rng.choice([0.2, 0.5, 0.5, 0.9])), 2)
    for _ in range(int(rng.integers(1, 2 * k))):
        c1, c2 = rng.integers(0, k, 2)
        if c1 != c2:
            a, b = member(c1), member(c2)
            edges[(min(a, b), max(a, b))] = (float(rng.choice([-0.5, 0.0])), 1)
    pairs = np.array(sorted(edges), dtype=np.int64).reshape(-1, 2)
    w = np.array([edges[tuple(p)][0] for p in pairs], np.float32)
    tiers = np.array([edges[tuple(p)][1] for p in pairs], np.uint8)
    n_blocks = int(rng.integers(2, 6))
    owner = rng.integers(0, n_blocks, k)[np.repeat(np.arange(k), sizes)]
    moved = rng.random(n) < 0.1
    owner[moved] = rng.integers(0, n_blocks, moved.sum())
    return ids, pairs, w, tiers, np.ones(len(pairs), np.int64), owner


def split(n: int, n_blocks: int, rng) -> np.ndarray:
    """Block of every node: contiguous runs of the id order (as blocks own runs of centres), or random."""
    if rng.random() < 0.5:
        cuts = np.sort(rng.choice(np.arange(1, max(n, 2)), min(n_blocks - 1, max(n - 1, 0)), replace=False))
        return np.searchsorted(cuts, np.arange(n), side="right")
    return rng.integers(0, n_blocks, n)


def contract_all(ids, pairs, w, tiers, counts, owner, threshold, contract=contract_block, exact_map=False):
    keep = counts > 0
    blocks, owned = [], []
    for blk in range(owner.max() + 1):
        mine = np.flatnonzero(owner == blk)
        e = keep & (owner[pairs[:, 0]] == blk)
        if exact_map:  # only the owned patches that another block's edge names
            named = np.unique(pairs[keep & (owner[pairs[:, 0]] != blk) & (owner[pairs[:, 1]] == blk), 1])
            boundary = np.isin(mine, named)
        else:  # the superset a block can decide alone: every patch with an edge to another block
            other = keep & (owner[pairs[:, 0]] != owner[pairs[:, 1]])
            boundary = np.isin(mine, pairs[other].ravel())
        blocks.append(contract(ids[mine], ids[pairs[e, 0]], ids[pairs[e, 1]], w[e], tiers[e], threshold=threshold,
                               boundary=boundary))
        owned.append(ids[mine])
    return blocks, owned
