"""The DB agglomeration reproduces ops.partition exactly (two-tier connected components with mutexes, and
the mutex watershed) on random tiered graphs, edges spread over several blocks."""

from __future__ import annotations

import numpy as np
import pytest

from ppp_dist.config import DatabaseConfig
from ppp_dist.io.graph_store import make_edges, make_fragments, open_graph_store
from ppp_dist.ops.partition import partition
from ppp_dist.pipeline.segments import agglomerate_instances
from ppp_dist.pipeline.settings import AssemblySettings


def _random_graph(seed):
    """Nodes in groups: inside a group mostly tier-1 attraction (plus tier-2 edges), between groups a mix
    of tier-1 repulsion, tier-2 attraction and noise; few distinct weights, so ties (broken by the pair) matter."""
    rng = np.random.default_rng(seed)
    n, e = (120, 400) if seed % 3 == 0 else (200, 300)
    ids = np.sort(rng.choice(np.arange(1, 10_000), n, replace=False)).astype(np.int64)
    group = rng.integers(0, n // 5, n)
    a, b = rng.integers(0, n, e), rng.integers(0, n, e)
    # half the edges inside a group: b = another member of a's group
    order = np.argsort(group, kind="stable")
    start = np.searchsorted(group[order], group)
    size = np.bincount(group, minlength=group.max() + 1)[group]
    half = np.arange(e) % 2 == 0
    b[half] = order[start[a[half]] + rng.integers(0, 1 << 30, half.sum()) % size[a[half]]]
    ok = a != b
    pairs = np.unique(np.sort(np.stack([a[ok], b[ok]], 1), axis=1), axis=0)
    inside = group[pairs[:, 0]] == group[pairs[:, 1]]
    levels = np.array([-0.5, -0.1, 0.0, 0.2, 0.5, 0.9, 1.0], np.float32)
    w = np.where(inside, rng.choice(levels[3:], len(pairs)), rng.choice(levels[:4], len(pairs))).astype(np.float32)
    tiers = np.where(inside, rng.choice([1, 2], len(pairs), p=[0.7, 0.3]),
                     rng.choice([1, 2], len(pairs), p=[0.9, 0.1])).astype(np.uint8)
    counts = rng.integers(1, 5, len(pairs))
    return ids, pairs, w, counts, tiers


@pytest.mark.parametrize("method", ["connected_components", "mutex_watershed"])
@pytest.mark.parametrize("seed", range(6))
def test_db_partition_equals_ops_partition(method, seed, tmp_path):
    ids, pairs, w, counts, tiers = _random_graph(seed)
    threshold = 0.1 if seed % 2 else 0.0
    expected = partition(len(ids), pairs, w, counts, tiers, method=method, threshold=threshold)
    store = open_graph_store(DatabaseConfig(path=str(tmp_path / "g.sqlite")))
    try:
        owner = np.arange(len(ids)) % 3  # three "blocks", each owning the edges of its first node
        for blk in range(3):
            mine = owner[pairs[:, 0]] == blk
            c = np.where(tiers[mine] == 1, counts[mine], -counts[mine])
            store.write_block("vote", blk, make_fragments(ids[owner == blk]),
                              make_edges(ids[pairs[mine, 0]], ids[pairs[mine, 1]], w[mine].astype(np.float64), c))
        settings = AssemblySettings((1, 5, 5), partition=method, edge_threshold=threshold)
        agglomerate_instances(store, settings, batch_size=37)
        frag, seg = store.read_lut()
    finally:
        store.close()
    np.testing.assert_array_equal(frag, ids)
    np.testing.assert_array_equal(seg, expected)
