"""The in-block contraction is exact: contracted blocks, stitched, give ``ops.partition``'s two-tier
connected components on random tiered graphs with ties, for any split into blocks; and each plausible
mistake (cross-block mutexes dropped, the last tier-2 edge per pair kept instead of the first, ties
reversed, local clusters absorbing tier-2 edges) is caught by these graphs."""

from __future__ import annotations

import numpy as np
import pytest

from ppp_dist.ops.contract import LINK_DTYPE, MUTEX, TIER2, ContractedBlock, contract_block
from ppp_dist.ops.partition import partition

from _stitch_reference import stitch

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


def expected_labels(ids, pairs, w, tiers, counts, threshold):
    return partition(len(ids), pairs, w, counts, tiers, method="connected_components", threshold=threshold)


def test_contracted_blocks_stitch_to_ops_partition():
    """700 graphs: random ones (400, 1-7 blocks) and clustered ones with repeated tied tier-2 pairs (300)."""
    mismatches = 0
    for seed in range(400):
        rng = np.random.default_rng(10_000 + seed)
        ids, pairs, w, tiers, counts = random_tiered_graph(seed)
        threshold = float(rng.choice([0.0, 0.1, 0.2]))
        owner = split(len(ids), int(rng.integers(1, 8)), rng)
        blocks, owned = contract_all(ids, pairs, w, tiers, counts, owner, threshold, exact_map=bool(seed % 2))
        got_ids, got = stitch(blocks, owned, threshold)
        np.testing.assert_array_equal(got_ids, ids)
        mismatches += not np.array_equal(got, expected_labels(ids, pairs, w, tiers, counts, threshold))
    for seed in range(300):
        rng = np.random.default_rng(40_000 + seed)
        *graph, owner = clustered_tiered_graph(seed)
        threshold = float(rng.choice([0.0, 0.1, 0.2]))
        blocks, owned = contract_all(*graph, owner, threshold, exact_map=bool(seed % 2))
        mismatches += not np.array_equal(stitch(blocks, owned, threshold)[1], expected_labels(*graph, threshold))
    assert mismatches == 0


def test_one_block_contracts_to_its_partition_and_rows_shrink():
    ids, pairs, w, tiers, counts = random_tiered_graph(7)
    owner = np.zeros(len(ids), int)
    blocks, owned = contract_all(ids, pairs, w, tiers, counts, owner, 0.0)
    c = blocks[0]
    assert len(c.map_patches) == 0 and not (c.links["b"] == 0).any()  # nothing crosses a block
    assert c.rows < len(ids) + int((counts > 0).sum())
    np.testing.assert_array_equal(stitch(blocks, owned, 0.0)[1], expected_labels(ids, pairs, w, tiers, counts, 0.0))


# -- mutants: each plausible mistake must make some of these graphs disagree with ops.partition


def _drop_cross_mutexes(*args, **kw) -> ContractedBlock:
    c = contract_block(*args, **kw)
    keep = ~((c.links["kind"] == MUTEX) & (c.links["b"] == 0))
    return ContractedBlock(c.patch_clusters, c.cluster_ids, c.cluster_sizes, c.map_patches, c.map_clusters,
                           c.links[keep])


def _tier2_pick(last: bool, reverse_ties: bool):
    def contract(patch_ids, u, v, weights, tiers, *, threshold, boundary):
        c = contract_block(patch_ids, u, v, weights, tiers, threshold=threshold, boundary=boundary)
        w64 = np.asarray(weights, np.float64)
        sel = np.flatnonzero((np.asarray(tiers) == 2) & (w64 > threshold))
        cl = dict(zip(patch_ids.tolist(), c.patch_clusters.tolist()))
        rows = []
        for k in sel:
            a = cl[int(u[k])]
            b = cl.get(int(v[k]), 0)
            other = b if b else int(v[k])
            if other == a:
                continue
            prio = abs(w64[k] - threshold)
            tie = (-int(u[k]), -int(v[k])) if reverse_ties else (int(u[k]), int(v[k]))
            rows.append(((a, other), (-prio, *tie), (a, b, int(u[k]), int(v[k]), w64[k])))
        best = {}
        for key, rank, row in sorted(rows, key=lambda r: r[1], reverse=last):
            best.setdefault(key, row)
        t2 = np.zeros(len(best), LINK_DTYPE)
        for i, (a, b, uu, vv, ww) in enumerate(best.values()):
            t2[i] = (a, b, uu, vv, ww, TIER2)
        links = np.concatenate([c.links[c.links["kind"] != TIER2], t2])
        return ContractedBlock(c.patch_clusters, c.cluster_ids, c.cluster_sizes, c.map_patches, c.map_clusters,
                               links)
    return contract


def _absorb_tier2(patch_ids, u, v, weights, tiers, *, threshold, boundary):
    internal = np.isin(v, patch_ids) & (np.asarray(weights, np.float64) > threshold)
    return contract_block(patch_ids, u, v, weights, np.where(internal, 1, tiers), threshold=threshold,
                          boundary=boundary)


@pytest.mark.parametrize("mutant", [_drop_cross_mutexes, _tier2_pick(last=True, reverse_ties=False),
                                    _tier2_pick(last=False, reverse_ties=True), _absorb_tier2],
                         ids=["drop_cross_mutexes", "last_tier2", "reversed_ties", "absorb_tier2"])
def test_plausible_mistakes_are_caught(mutant):
    mismatches = 0
    for seed in range(300):
        rng = np.random.default_rng(30_000 + seed)
        *graph, owner = clustered_tiered_graph(seed)
        threshold = float(rng.choice([0.0, 0.1, 0.2]))
        blocks, owned = contract_all(*graph, owner, threshold, contract=mutant)
        mismatches += not np.array_equal(stitch(blocks, owned, threshold)[1], expected_labels(*graph, threshold))
    assert mismatches > 0


def test_contract_block_checks_its_inputs():
    ids = np.array([3, 5, 9])
    with pytest.raises(ValueError, match="ascending"):
        contract_block(ids[::-1], [], [], [], [], threshold=0.0, boundary=np.zeros(3, bool))
    with pytest.raises(ValueError, match="owns"):
        contract_block(ids, [4], [9], [0.5], [1], threshold=0.0, boundary=np.zeros(3, bool))
    with pytest.raises(ValueError, match="u < v"):
        contract_block(ids, [9], [5], [0.5], [1], threshold=0.0, boundary=np.zeros(3, bool))
    with pytest.raises(ValueError, match="NaN"):
        contract_block(ids, [3], [5], [np.nan], [1], threshold=0.0, boundary=np.zeros(3, bool))
