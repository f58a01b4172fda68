"""Union-find over sparse int64 ids against scipy's connected components; hierarchical = flat."""

from __future__ import annotations

import doctest

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from scipy.sparse import coo_matrix
from scipy.sparse.csgraph import connected_components as scipy_cc

from ppp_dist.ops import union_find
from ppp_dist.ops.union_find import UnionFind, apply_table, connected_components, edge_table, merge_tables


def _reference(ids: np.ndarray, u: np.ndarray, v: np.ndarray) -> np.ndarray:
    """scipy components, relabelled canonically: the smallest id of each component."""
    ids = np.unique(ids)
    iu, iv = np.searchsorted(ids, u), np.searchsorted(ids, v)
    n = len(ids)
    _, comp = scipy_cc(coo_matrix((np.ones(len(iu)), (iu, iv)), shape=(n, n)), directed=False)
    smallest = np.full(comp.max() + 1 if n else 0, np.iinfo(np.int64).max)
    np.minimum.at(smallest, comp, ids)
    return smallest[comp]


def _random_graph(rng, n_nodes, n_edges):
    ids = np.unique(rng.integers(1, 2**62, n_nodes))  # sparse ids, like block << 32 | local
    u = ids[rng.integers(0, len(ids), n_edges)]
    v = ids[rng.integers(0, len(ids), n_edges)]
    return ids, u, v


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_matches_scipy_in_batches_in_any_order(seed):
    rng = np.random.default_rng(seed)
    ids, u, v = _random_graph(rng, 20_000, 15_000)
    expected = _reference(ids, u, v)
    order = rng.permutation(len(u))
    uf = UnionFind(rng.permutation(ids))
    for chunk in np.array_split(order, 7):  # streamed batches, shuffled edges, swapped endpoints
        uf.union(v[chunk], u[chunk])
    assert np.array_equal(uf.ids, ids)
    assert np.array_equal(uf.labels(), expected)
    assert uf.num_components == len(np.unique(expected)) and uf.edges_seen == len(u)


@settings(max_examples=60, deadline=None)
@given(st.lists(st.tuples(st.integers(1, 40), st.integers(1, 40)), max_size=60),
       st.integers(min_value=2, max_value=5), st.randoms(use_true_random=False))
def test_hierarchical_reduction_equals_flat(pairs, fan_in, rnd):
    ids = np.arange(1, 41, dtype=np.int64) * 1_000_003
    u = np.array([a for a, _ in pairs], np.int64) * 1_000_003
    v = np.array([b for _, b in pairs], np.int64) * 1_000_003
    flat = UnionFind(ids)
    flat.union(u, v)
    cuts = sorted(rnd.sample(range(len(u) + 1), min(len(u) + 1, 4)))
    leaves = [edge_table(u[a:b], v[a:b]) for a, b in zip([0] + cuts, cuts + [len(u)])]
    while len(leaves) > 1:
        leaves = [merge_tables(leaves[k:k + fan_in]) for k in range(0, len(leaves), fan_in)]
    nodes, reps = leaves[0]
    assert np.array_equal(apply_table(ids, nodes, reps), flat.labels())


def test_connected_components_and_tables_small():
    ids, labels = connected_components(np.array([7, 3]), np.array([3, 12]), ids=np.array([1, 3, 7, 12, 20]))
    assert ids.tolist() == [1, 3, 7, 12, 20] and labels.tolist() == [1, 3, 3, 3, 20]
    assert [a.tolist() for a in merge_tables([])] == [[], []]
    assert apply_table(np.array([4, 5]), np.zeros(0, np.int64), np.zeros(0, np.int64)).tolist() == [4, 5]


def test_unknown_and_invalid_ids():
    uf = UnionFind(np.array([1, 2, 3]))
    with pytest.raises(KeyError, match="edge 2-9 names id 9, which is not a node"):
        uf.union(np.array([1, 2]), np.array([2, 9]))
    assert uf.labels().tolist() == [1, 1, 3]  # the edges before the bad one are applied
    with pytest.raises(ValueError, match="ids must be below 2\\*\\*63"):
        UnionFind(np.array([2**63], np.uint64))
    with pytest.raises(TypeError, match="must be integers"):
        UnionFind(np.array([1.5]))
    with pytest.raises(ValueError, match="differ in length"):
        uf.union(np.array([1]), np.array([1, 2]))


def test_doctests():
    assert doctest.testmod(union_find).failed == 0
