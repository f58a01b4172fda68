"""Invariant 3 for the pipeline: an interrupted run, rerun with the same call, gives the uninterrupted bytes;
a finished run rerun changes nothing; lost outputs of some blocks are recomputed from the ledger."""

from __future__ import annotations

import numpy as np
from _pipeline_helpers import whole_volume, write_oracle

from ppp_dist.config import config_from_table
from ppp_dist.data import crossing_worms_2d
from ppp_dist.io.stores import StoreFactory
from ppp_dist.io.volumes import open_array, write_box
from ppp_dist.pipeline import vote as vote_mod
from ppp_dist.pipeline.infer import run_pipeline
from ppp_dist.pipeline.runner import run_stage
from ppp_dist.pipeline.settings import assembly_settings, prediction_arrays

PS = (1, 7, 7)
BLOCK = (1, 24, 24)


def _setup(tmp_path):
    inst = crossing_worms_2d(shape=(72, 72), n_worms=3, width=(5, 7), seed=5).instances
    group = write_oracle(tmp_path / "pred.zarr", inst, PS, (1, 8, 8))
    # default database: <exp>/graph.sqlite, one per experiment folder
    cfg = config_from_table({"model": {"patch_shape": list(PS)}, "vote": {"block_shape": list(BLOCK)}})
    return group, cfg


def _db(cfg, exp, blocks=9):
    """The contracted graph rows of every vote block and the instances table."""
    store = StoreFactory(cfg.database, str(exp))()
    try:
        rows = [{t: r.tolist() for t, r in store.block_rows(b).items()} for b in range(blocks)]
        return rows, [a.tolist() for a in store.instances_of_blocks(range(blocks))]
    finally:
        store.close()


def test_interrupted_vote_and_lost_paint_blocks_resume_to_the_same_bytes(tmp_path):
    group, cfg = _setup(tmp_path)
    settings = assembly_settings(cfg)
    ref = whole_volume(group, settings)
    full = run_pipeline(cfg, tmp_path / "full", client=None, prediction=group)
    expected = np.asarray(open_array(full.output)[...])
    np.testing.assert_array_equal(expected, ref)

    # "killed" after 4 of 9 vote blocks: only those are in the ledger
    exp = tmp_path / "resumed"
    grid = vote_mod.vote_grid(ref.shape[1:], BLOCK, settings)
    patches, numinst = prediction_arrays(group)
    factory = StoreFactory(cfg.database, str(exp))
    artifacts = vote_mod.VoteArtifacts(str(exp / "pipeline"))
    artifacts.prepare(ref.shape[1:], BLOCK, fresh=True)
    part = run_stage(None, "vote", list(grid)[:4], vote_mod.VoteStage.stored(patches, numinst, settings,
                                                                              artifacts.work_dir), factory,
                     progress=False)
    assert part.done == 4
    # the same parameters as run_pipeline records, so the done blocks count
    res = run_pipeline(cfg, exp, client=None, prediction=group)
    assert res.stages["vote"]["skipped"] == 4 and res.stages["vote"]["done"] == 9
    out = np.asarray(open_array(res.output)[...])
    np.testing.assert_array_equal(out, expected)
    assert _db(cfg, exp) == _db(cfg, tmp_path / "full")

    # a finished run rerun: every stage skipped, same bytes
    again = run_pipeline(cfg, exp, client=None, prediction=group)
    assert again.stages["vote"]["skipped"] == 9 and again.stages["paint"]["skipped"] == 9
    assert again.stages["agglomerate"]["skipped"] == 1
    np.testing.assert_array_equal(np.asarray(open_array(res.output)[...]), expected)

    # paint output of two blocks lost (zeroed) and their ledger rows forgotten: only they are redone
    arr = open_array(res.output, "r+")
    for b in (0, 4):
        box = grid[b].write_box
        write_box(arr, box, np.zeros((arr.shape[0],) + box.shape, np.uint32))
    store = factory()
    store.reset_blocks("paint", [0, 4])
    store.close()
    redo = run_pipeline(cfg, exp, client=None, prediction=group)
    assert redo.stages["paint"]["skipped"] == 7 and redo.stages["vote"]["skipped"] == 9
    np.testing.assert_array_equal(np.asarray(open_array(res.output)[...]), expected)


def test_changed_block_shape_redoes_every_stage(tmp_path):
    group, cfg = _setup(tmp_path)
    first = run_pipeline(cfg, tmp_path / "exp", client=None, prediction=group)
    expected = np.asarray(open_array(first.output)[...])
    res = run_pipeline(cfg, tmp_path / "exp", client=None, prediction=group, block_shape=(1, 32, 40))
    assert res.stages["vote"]["skipped"] == 0 and res.stages["paint"]["skipped"] == 0
    np.testing.assert_array_equal(np.asarray(open_array(res.output)[...]), expected)


def test_new_edge_threshold_redoes_vote_agglomerate_and_paint(tmp_path):
    """The contraction unites the edges above edge_threshold inside each block: a new threshold is a new vote."""
    group, cfg = _setup(tmp_path)
    run_pipeline(cfg, tmp_path / "exp", client=None, prediction=group)
    cfg2 = config_from_table({"model": {"patch_shape": list(PS)},
                              "vote": {"block_shape": list(BLOCK), "edge_threshold": 0.95}})
    res = run_pipeline(cfg2, tmp_path / "exp", client=None, prediction=group)
    assert res.stages["vote"]["skipped"] == 0
    assert res.stages["agglomerate"]["skipped"] == 0 and res.stages["paint"]["skipped"] == 0
    np.testing.assert_array_equal(np.asarray(open_array(res.output)[...]),
                                  whole_volume(group, assembly_settings(cfg2)))


def test_new_paint_setting_redoes_paint_only(tmp_path):
    group, cfg = _setup(tmp_path)
    run_pipeline(cfg, tmp_path / "exp", client=None, prediction=group)
    cfg2 = config_from_table({"model": {"patch_shape": list(PS)}, "vote": {"block_shape": list(BLOCK)},
                              "postprocess": {"min_instance_size": 100}})  # one of the 4 worms has 51 voxels
    res = run_pipeline(cfg2, tmp_path / "exp", client=None, prediction=group)
    assert res.stages["vote"]["skipped"] == 9 and res.stages["agglomerate"]["skipped"] == 1
    assert res.stages["paint"]["skipped"] == 0 and res.removed_instances > 0
    np.testing.assert_array_equal(np.asarray(open_array(res.output)[...]),
                                  whole_volume(group, assembly_settings(cfg2)))
