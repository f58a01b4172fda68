"""The vote stage's graph rows equal the whole-volume patch graph: every selected patch once, every edge with
votes once (by the block owning its smaller id), same weight, count and tier; halos as documented."""

from __future__ import annotations

import numpy as np
import pytest
from _pipeline_helpers import write_oracle

from ppp_dist.config import DatabaseConfig
from ppp_dist.data import crossing_worms_2d
from ppp_dist.io.graph_store import StoreFactory
from ppp_dist.io.volumes import open_array
from ppp_dist.ops.consensus import compute_consensus, compute_scores, numinst_from_prob, prepare_field
from ppp_dist.ops.patch_graph import patch_graph
from ppp_dist.ops.selection import select_patches
from ppp_dist.pipeline import vote as vote_mod
from ppp_dist.pipeline.settings import AssemblySettings, paint_halo, prediction_arrays, vote_halo
from ppp_dist.runner import run_stage


def test_halos():
    s = AssemblySettings((7, 7, 7))
    assert vote_halo(s) == (33, 33, 33) and paint_halo(s) == (3, 3, 3)
    assert vote_halo(AssemblySettings((1, 9, 9), refine_consensus=False)) == (0, 36, 36)


@pytest.mark.parametrize("refine", [True, False])  # vote halo 11h / 9h
def test_vote_rows_equal_the_whole_volume_graph(refine, tmp_path):
    ps = (1, 7, 7)
    inst = crossing_worms_2d(shape=(64, 80), n_worms=3, width=(5, 7), seed=7).instances
    group = write_oracle(tmp_path / "pred.zarr", inst, ps, (1, 8, 8))
    settings = AssemblySettings(ps, refine_consensus=refine)
    patches, numinst = prediction_arrays(group)
    factory = StoreFactory(DatabaseConfig(path=str(tmp_path / "g.sqlite")), str(tmp_path))
    grid = vote_mod.vote_grid((1, 64, 80), (1, 24, 32), settings)
    assert run_stage(None, "vote", list(grid), vote_mod.VoteStage.stored(patches, numinst, settings), factory,
                     progress=False).ok
    # whole volume
    ni = numinst_from_prob(np.asarray(open_array(numinst)[...]))
    field = prepare_field(np.asarray(open_array(patches)[...]), ni, ps)
    cons = compute_consensus(field, refine=refine)
    sel = select_patches(field, cons, compute_scores(field, cons))
    g = patch_graph(field, cons, sel, global_shape=(1, 64, 80))
    store = factory()
    try:
        ids = store.fragment_ids()
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
