"""The in-block contraction is exact: contracted blocks, stitched, give ``ops.partition``'s two-tier
connected components on random tiered graphs with ties, for any split into blocks; and each plausible
mistake (cross-block mutexes dropped, the last tier-2 edge per pair kept instead of the first, ties
reversed, local clusters absorbing tier-2 edges) is caught by these graphs."""

from __future__ import annotations

import numpy as np
import pytest
from _stitch_reference import stitch
from _tiered_graphs import clustered_tiered_graph, contract_all, random_tiered_graph, split

from ppp_dist.ops.contract import LINK_DTYPE, MUTEX, TIER2, ContractedBlock, contract_block
from ppp_dist.ops.partition import partition


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
        for key, _rank, row in sorted(rows, key=lambda r: r[1], reverse=last):
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
