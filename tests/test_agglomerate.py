"""agglomerate: streamed union-find over the graph DB equals connected components (scipy, networkx)."""

from __future__ import annotations

import networkx as nx
import numpy as np
import pytest
from scipy.sparse import coo_matrix
from scipy.sparse.csgraph import connected_components

from ppp_dist.errors import DatabaseError
from ppp_dist.io.graph_store import make_edges, make_fragments
from ppp_dist.io.stores import StoreFactory, open_graph_store
from ppp_dist.pipeline.agglomerate import agglomerate, agglomerate_hierarchical

N_BLOCKS = 40


def _write_random_graph(store, n_edges: int, seed: int = 0):
    """Blocks of fragments with ids block << 32 | local; each edge is stored once by the block of min(u, v)."""
    rng = np.random.default_rng(seed)
    per_block = n_edges // (4 * N_BLOCKS)  # 4 edges per fragment
    ids = np.concatenate([(np.int64(b) << 32) | np.arange(1, per_block + 1, dtype=np.int64) for b in range(N_BLOCKS)])
    u = ids[rng.integers(0, len(ids), 2 * n_edges)]
    # mostly local edges (neighbouring blocks), so components are neither all singletons nor one giant
    v = ids[np.clip(np.searchsorted(ids, u) + rng.integers(-3 * per_block // 2, 3 * per_block // 2, len(u)), 0,
                    len(ids) - 1)]
    lo, hi = np.minimum(u, v), np.maximum(u, v)
    pairs = np.unique(np.stack([lo, hi], 1)[lo != hi], axis=0)
    pairs = pairs[rng.permutation(len(pairs))[:n_edges]]
    assert len(pairs) == n_edges
    weights = rng.random(len(pairs))
    owner = pairs[:, 0] >> 32
    for b in range(N_BLOCKS):
        mine = owner == b
        frag_ids = ids[(ids >> 32) == b]
        store.write_block("vote", b, make_fragments(frag_ids, sizes=np.ones(len(frag_ids))),
                          make_edges(pairs[mine, 0], pairs[mine, 1], weights[mine]))
    return ids, pairs, weights


def _scipy_lut(ids, pairs, weights, threshold):
    keep = weights > threshold
    iu, iv = np.searchsorted(ids, pairs[keep, 0]), np.searchsorted(ids, pairs[keep, 1])
    n = len(ids)
    _, comp = connected_components(coo_matrix((np.ones(len(iu)), (iu, iv)), shape=(n, n)), directed=False)
    smallest = np.full(comp.max() + 1, np.iinfo(np.int64).max)
    np.minimum.at(smallest, comp, ids)
    return smallest[comp]


def test_flat_and_hierarchical_match_scipy_on_1e5_edges(database_config, tmp_path):
    with open_graph_store(database_config, tmp_path) as store:
        ids, pairs, weights = _write_random_graph(store, 100_000)
        expected = _scipy_lut(ids, pairs, weights, 0.8)
        _, sizes = np.unique(expected, return_counts=True)
        assert 100 < len(sizes) < len(ids) // 2 and sizes.max() < 0.8 * len(ids)  # a non-trivial partition

        summary = agglomerate(store, edge_threshold=0.8, batch_size=7_777)
        frag, seg = store.read_lut()
        assert np.array_equal(frag, ids) and np.array_equal(seg, expected)
        assert summary.fragments == len(ids) and summary.segments == len(np.unique(expected))
        assert summary.edges_merged == int((weights > 0.8).sum())
        assert summary.merges == len(ids) - summary.segments
        assert store.done_blocks("agglomerate") == {0}

        store.write_lut(np.array([1]), np.array([1]))  # the hierarchical run replaces the LUT entirely
        factory = StoreFactory(database_config, str(tmp_path))
        tree = agglomerate_hierarchical(store, factory, edge_threshold=0.8, blocks_per_leaf=3, fan_in=3,
                                        batch_size=5_000)
        frag, seg = store.read_lut()
        assert np.array_equal(frag, ids) and np.array_equal(seg, expected)
        assert (tree.segments, tree.edges_merged) == (summary.segments, summary.edges_merged)
        assert tree.tasks == 14 + 5 + 2 + 1


def test_matches_networkx_and_threshold_is_strict(database_config, tmp_path):
    with open_graph_store(database_config, tmp_path) as store:
        store.write_block("vote", 0, make_fragments([1, 2, 3, 4, 5, 6]),
                          make_edges([1, 2, 4, 5], [2, 3, 5, 6], [0.5, 0.9, 0.51, -np.inf]))
        store.write_block("vote", 1, make_fragments([10, 11]), make_edges([3, 10], [10, 11], [np.inf, 0.2]))
        agglomerate(store, edge_threshold=0.5)
        graph = nx.Graph()
        graph.add_nodes_from([1, 2, 3, 4, 5, 6, 10, 11])
        graph.add_edges_from([(2, 3), (4, 5), (3, 10)])  # weight > 0.5 only: 0.5 itself does not merge
        expected = {n: min(c) for c in nx.connected_components(graph) for n in c}
        frag, seg = store.read_lut()
        assert dict(zip(frag.tolist(), seg.tolist())) == expected
        summary = agglomerate(store, edge_threshold=-1.0)  # a re-run with another threshold replaces the LUT
        assert summary.segments == 3 and store.read_lut()[1].tolist() == [1, 1, 1, 4, 4, 6, 1, 1]


def test_edge_to_an_unwritten_fragment_is_a_clear_error(tmp_path):
    from ppp_dist.config import DatabaseConfig

    config = DatabaseConfig(path=str(tmp_path / "g.sqlite"))
    with open_graph_store(config) as store:
        store.write_block("vote", 0, make_fragments([1, 2]), make_edges([2], [77], [1.0]))
        with pytest.raises(DatabaseError, match="names id 77, which is not a node in the fragments table .* "
                                                "finish that stage"):
            agglomerate(store, edge_threshold=0.5)
        with pytest.raises(DatabaseError, match="names fragment 77, which is not in the fragments table"):
            agglomerate_hierarchical(store, StoreFactory(config), edge_threshold=0.5)
        with pytest.raises(ValueError, match="edge_threshold is NaN"):
            agglomerate(store, edge_threshold=float("nan"))
        store.write_block("vote", 0, make_fragments([1, 2]), None)  # no edges at all: singletons
        empty = agglomerate_hierarchical(store, StoreFactory(config), edge_threshold=0.5)
        assert empty.segments == 2 and empty.tasks == 0
