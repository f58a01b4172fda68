"""The vote stage's graph rows equal the whole-volume patch graph: with the mutex watershed every selected patch
once and every edge with votes once (by the block owning its smaller id), same weight, count and tier; with
connected components, each block's contraction of exactly its part of that graph (clusters and links as
``ops.contract`` gives them, and a map that holds every patch another block's link names); halos as documented."""

from __future__ import annotations

import numpy as np
import pytest
from _pipeline_helpers import write_oracle

from ppp_dist.config import DatabaseConfig
from ppp_dist.data import crossing_worms_2d
from ppp_dist.io.stores import StoreFactory
from ppp_dist.io.volumes import open_array
from ppp_dist.ops.consensus import compute_consensus, compute_scores, numinst_from_prob, prepare_field
from ppp_dist.ops.patch_graph import patch_graph
from ppp_dist.ops.selection import select_patches
from ppp_dist.pipeline import vote as vote_mod
from ppp_dist.pipeline.runner import run_stage
from ppp_dist.pipeline.settings import AssemblySettings, paint_halo, prediction_arrays, vote_halo
from ppp_dist.pipeline.sources import StoredPrediction


def test_halos():
    s = AssemblySettings((7, 7, 7))
    assert vote_halo(s) == (33, 33, 33) and paint_halo(s) == (3, 3, 3)
    assert vote_halo(AssemblySettings((1, 9, 9), refine_consensus=False)) == (0, 36, 36)


def _whole_graph(patches, numinst, ps, refine, shape):
    ni = numinst_from_prob(np.asarray(open_array(numinst)[...]))
    field = prepare_field(np.asarray(open_array(patches)[...]), ni, ps)
    cons = compute_consensus(field, refine=refine)
    sel = select_patches(field, cons, compute_scores(field, cons))
    return patch_graph(field, cons, sel, global_shape=shape)


def _vote(tmp_path, settings, group, shape, block):
    patches, numinst = prediction_arrays(group)
    factory = StoreFactory(DatabaseConfig(path=str(tmp_path / "g.sqlite")), str(tmp_path))
    grid = vote_mod.vote_grid(shape, block, settings)
    artifacts = vote_mod.VoteArtifacts(str(tmp_path / "work"))
    artifacts.prepare(shape, grid.block_shape, fresh=True)
    assert run_stage(None, "vote", list(grid), vote_mod.VoteStage(StoredPrediction(patches, numinst), settings,
                                                                  artifacts), factory, progress=False).ok
    return factory, grid, (patches, numinst)


@pytest.mark.parametrize("refine", [True, False])  # vote halo 11h / 9h
def test_vote_rows_equal_the_whole_volume_graph(refine, tmp_path):
    ps, shape = (1, 7, 7), (1, 64, 80)
    inst = crossing_worms_2d(shape=(64, 80), n_worms=3, width=(5, 7), seed=7).instances
    group = write_oracle(tmp_path / "pred.zarr", inst, ps, (1, 8, 8))
    settings = AssemblySettings(ps, refine_consensus=refine, partition="mutex_watershed")
    factory, _, arrays = _vote(tmp_path, settings, group, shape, (1, 24, 32))
    g = _whole_graph(*arrays, ps, refine, shape)
    store = factory()
    try:
        ids = store.cluster_ids()
        edges = {(int(u), int(v)): (w, c) for b in store.iter_edges() for u, v, w, c in
                 zip(b.u, b.v, b.weight, b.count)}
    finally:
        store.close()
    np.testing.assert_array_equal(ids, g.node_ids)
    keep = g.counts > 0
    whole = {(int(g.node_ids[a]), int(g.node_ids[b])): (float(w), int(c if t == 1 else -c))
             for (a, b), w, c, t in zip(g.pairs[keep], g.weights[keep], g.counts[keep], g.tiers[keep])}
    assert len(whole) > 50 and edges == whole
    assert any(c < 0 for _, c in whole.values()), "crossing worms give tier-2 edges"


@pytest.mark.parametrize("threshold", [0.0, 0.3])
def test_contracted_rows_are_each_blocks_contraction(threshold, tmp_path):
    from ppp_dist.ops.contract import contract_block

    ps, shape = (1, 7, 7), (1, 64, 80)
    inst = crossing_worms_2d(shape=(64, 80), n_worms=3, width=(5, 7), seed=7).instances
    group = write_oracle(tmp_path / "pred.zarr", inst, ps, (1, 8, 8))
    settings = AssemblySettings(ps, edge_threshold=threshold)
    factory, grid, arrays = _vote(tmp_path, settings, group, shape, (1, 24, 32))
    g = _whole_graph(*arrays, ps, True, shape)
    keep = (g.counts > 0) & (g.tiers > 0)
    pairs, w, tiers = g.pairs[keep], g.weights[keep], g.tiers[keep]
    owner = np.array([next(b.block_id for b in grid if b.owns(c)) for c in g.coords])
    store = factory()
    try:
        for block in grid:
            mine = owner == block.block_id
            e = mine[pairs[:, 0]]
            named = np.unique(g.node_ids[pairs[~mine[pairs[:, 0]] & mine[pairs[:, 1]], 1]])
            want = contract_block(g.node_ids[mine], g.node_ids[pairs[e, 0]], g.node_ids[pairs[e, 1]], w[e], tiers[e],
                                  threshold=threshold, boundary=np.isin(g.node_ids[mine], named))
            got = store.block_rows(block.block_id)
            np.testing.assert_array_equal(got["clusters"]["id"], want.cluster_ids)
            np.testing.assert_array_equal(got["clusters"]["size"], want.cluster_sizes)
            assert sorted(got["links"].tolist()) == sorted(want.links.tolist())
            assert set(want.map_patches.tolist()) <= set(got["patch_map"]["patch"].tolist())
    finally:
        store.close()
    assert (tiers == 2).any()
