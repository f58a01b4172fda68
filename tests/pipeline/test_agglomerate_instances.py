"""The agglomeration in the database reproduces ops.partition exactly: contracted blocks written as the vote
stage writes them, stitched by the tree of tasks and phase 2 (two-tier connected components), and the full
graph in memory (mutex watershed), on random and clustered tiered graphs with ties; SQLite and PostgreSQL.
A missing vote block is reported, not guessed."""

from __future__ import annotations

import numpy as np
import pytest
from _tiered_graphs import clustered_tiered_graph, contract_all, random_tiered_graph, split

from ppp_dist.errors import ConfigError, DatabaseError
from ppp_dist.io.graph_store import make_clusters, make_edges, make_map
from ppp_dist.io.stores import StoreFactory
from ppp_dist.ops.partition import partition
from ppp_dist.pipeline import agglomerate as agg
from ppp_dist.pipeline.settings import AssemblySettings


def _graph(seed):
    rng = np.random.default_rng(50_000 + seed)
    if seed % 2:
        *graph, owner = clustered_tiered_graph(seed)
    else:
        graph = random_tiered_graph(seed)
        owner = split(len(graph[0]), int(rng.integers(1, 6)), rng)
    return graph, owner, float(rng.choice([0.0, 0.1, 0.2]))


def _write_contracted(store, graph, owner, threshold):
    blocks, owned = contract_all(*graph, owner, threshold)
    for blk, c in enumerate(blocks):
        store.write_block("vote", blk, clusters=make_clusters(c.cluster_ids, c.cluster_sizes),
                          patch_map=make_map(c.map_patches, c.map_clusters), links=c.links)
    return blocks, owned


def _patch_instances(store, blocks, owned):
    """Instance id of every patch: its cluster's row of the instances table."""
    clusters, instances = store.instances_of_blocks(range(len(blocks)))
    ids = np.concatenate(owned)
    of_patch = np.concatenate([b.patch_clusters for b in blocks])
    order = np.argsort(ids)
    return ids[order], instances[np.searchsorted(clusters, of_patch)][order]


@pytest.mark.parametrize("seed", range(8))
def test_stitch_in_the_database_equals_ops_partition(seed, database_config, tmp_path, monkeypatch):
    monkeypatch.setattr(agg, "BLOCKS_PER_LEAF", 1 + seed % 3)  # trees of several levels
    monkeypatch.setattr(agg, "FAN_IN", 2)
    factory = StoreFactory(database_config, str(tmp_path))
    for k in range(6):
        graph, owner, threshold = _graph(6 * seed + k)
        expected = partition(len(graph[0]), graph[1], graph[2], graph[4], graph[3], threshold=threshold)
        store = factory()
        try:
            store.clear_graph()
            blocks, owned = _write_contracted(store, graph, owner, threshold)
            result = agg.agglomerate_instances(store, AssemblySettings((1, 5, 5), edge_threshold=threshold),
                                               store_factory=factory, tier2_batch_links=3)
            ids, got = _patch_instances(store, blocks, owned)
        finally:
            store.close()
        np.testing.assert_array_equal(ids, graph[0])
        np.testing.assert_array_equal(got, expected, err_msg=f"graph {6 * seed + k}")
        assert result["instances"] == expected.max()


def test_mutex_watershed_in_memory_and_its_budget(tmp_path):
    from ppp_dist.config import DatabaseConfig

    factory = StoreFactory(DatabaseConfig(path=str(tmp_path / "g.sqlite")), str(tmp_path))
    ids, pairs, w, tiers, counts = random_tiered_graph(3)
    expected = partition(len(ids), pairs, w, counts, tiers, method="mutex_watershed", threshold=0.1)
    store = factory()
    try:
        owner = np.arange(len(ids)) % 3
        for blk in range(3):
            mine = (owner[pairs[:, 0]] == blk) & (counts > 0)
            c = np.where(tiers[mine] == 1, counts[mine], -counts[mine])
            store.write_block("vote", blk, edges=make_edges(ids[pairs[mine, 0]], ids[pairs[mine, 1]],
                                                            w[mine].astype(np.float64), c),
                              clusters=make_clusters(ids[owner == blk]))
        settings = AssemblySettings((1, 5, 5), partition="mutex_watershed", edge_threshold=0.1)
        agg.agglomerate_instances(store, settings, store_factory=factory)
        clusters, instances = store.instances_of_blocks([0, 1, 2])
        np.testing.assert_array_equal(clusters, ids)
        np.testing.assert_array_equal(instances, expected)
        need = agg.mws_memory_bytes(store.num_edges()) / 2 ** 30
        with pytest.raises(ConfigError, match=r"mws_max_memory_gib = .*use partition = 'connected_components'"):
            agg.agglomerate_instances(store, settings, store_factory=factory, mws_max_memory_gib=need / 2)
    finally:
        store.close()


def test_a_missing_vote_block_is_reported(tmp_path):
    from ppp_dist.config import DatabaseConfig

    factory = StoreFactory(DatabaseConfig(path=str(tmp_path / "g.sqlite")), str(tmp_path))
    graph, owner, threshold = _graph(1)
    store = factory()
    try:
        blocks, _ = _write_contracted(store, graph, owner, threshold)
        named = {int(v) for c in blocks for v in c.links["v"][c.links["b"] == 0]}
        lost = next(b for b, c in enumerate(blocks) if named & set(c.map_patches.tolist()))
        store.write_block("vote", lost)  # the block's rows are gone (as if it never finished)
        with pytest.raises(DatabaseError, match="which no block's map holds.*finish that stage"):
            agg.agglomerate_instances(store, AssemblySettings((1, 5, 5), edge_threshold=threshold),
                                      store_factory=factory)
    finally:
        store.close()
