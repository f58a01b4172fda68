"""Invariant 1 on a real dask cluster: the blockwise pipeline (vote -> agglomerate -> paint) gives the bytes of
the in-process whole-volume ``ops.assemble`` for several block shapes (dividing the volume or not) and 1 or 2
worker processes, with oracle predictions stored as uint8 in zarr."""

from __future__ import annotations

import numpy as np
import pytest
from _pipeline_helpers import whole_volume, write_oracle
from distributed import Client, LocalCluster

from ppp_dist.config import DatabaseConfig, config_from_table
from ppp_dist.io.stores import open_graph_store
from ppp_dist.io.volumes import open_array
from ppp_dist.pipeline.infer import run_pipeline
from ppp_dist.pipeline.settings import assembly_settings


def _cluster(n):
    cluster = LocalCluster(n_workers=n, threads_per_worker=1, processes=True, dashboard_address=None,
                           silence_logs=50)
    return cluster, Client(cluster)


@pytest.fixture(scope="module")
def clients():
    c1, k1 = _cluster(1)
    c2, k2 = _cluster(2)
    yield {1: k1, 2: k2}
    for k, c in ((k1, c1), (k2, c2)):
        k.close()
        c.close()


DATASETS = {
    # name: (generator, kwargs, patch_shape)
    "tubes3d": ("crossing_tubes_3d", dict(shape=(36, 36, 36), n_tubes=3, seed=1), (5, 5, 5)),
    "worms2d": ("crossing_worms_2d", dict(shape=(96, 96), n_worms=3, width=(5, 7), seed=2), (1, 9, 9)),
    "nuclei2d": ("touching_nuclei_2d", dict(shape=(80, 80), n=10, radius=(5, 9), seed=3), (1, 11, 11)),
}
BLOCKS = {
    "tubes3d": [(16, 20, 12), (20, 20, 20), (24, 36, 36)],
    "worms2d": [(1, 32, 32), (1, 24, 40), (1, 96, 28)],
    "nuclei2d": [(1, 32, 32), (1, 24, 48), (1, 80, 20)],
}


@pytest.fixture(scope="module")
def datasets(tmp_path_factory):
    import ppp_dist.data as data

    cache = {}

    def get(name):
        if name not in cache:
            gen, kwargs, ps = DATASETS[name]
            sample = getattr(data, gen)(**kwargs)
            chunk = (1, 4, 4) if ps[0] == 1 else (4, 4, 4)
            group = write_oracle(tmp_path_factory.mktemp(name) / "pred.zarr", sample.instances, ps, chunk)
            cache[name] = group
        return cache[name]
    return get


def _config(tmp_path, ps, block, db=None, **vote):
    table = {"model": {"patch_shape": list(ps)}, "vote": {"block_shape": list(block), **vote},
             "database": db or {"path": str(tmp_path / "graph.sqlite")}}
    return config_from_table(table)


_REFERENCES = {}


def _reference(group, settings):
    key = (group, settings)
    if key not in _REFERENCES:
        _REFERENCES[key] = whole_volume(group, settings)
    return _REFERENCES[key]


def _run(tmp_path, group, ps, block, client, db=None, **vote):
    cfg = _config(tmp_path, ps, block, db, **vote)
    res = run_pipeline(cfg, tmp_path / "exp", client=client, prediction=group)
    assert res.ok, res.stages
    out = np.asarray(open_array(res.output)[...])
    return out, res, assembly_settings(cfg)


@pytest.mark.parametrize("name", sorted(DATASETS))
def test_blockwise_equals_whole_volume(name, datasets, clients, tmp_path):
    group = datasets(name)
    ps = DATASETS[name][2]
    for i, block in enumerate(BLOCKS[name]):
        client = clients[1 if i == len(BLOCKS[name]) - 1 else 2]
        out, res, settings = _run(tmp_path / f"b{i}", group, ps, block, client)
        ref = _reference(group, settings)
        assert ref.max() >= 3, "the scene should hold several instances"
        assert out.dtype == np.uint32 and out.shape == ref.shape
        np.testing.assert_array_equal(out, ref, err_msg=f"{name} block {block}")
        assert res.instances == ref.max()
        assert res.stages["vote"]["done"] == res.stages["vote"]["blocks"] > 1 or block[1:] == (36, 36)


def test_tier2_edges_and_mutex_watershed(datasets, clients, tmp_path):
    """Crossing worms have overlap voxels: tier-2 (fallback) links go through phase 2; MWS (full graph) is exact."""
    group = datasets("worms2d")
    ps = DATASETS["worms2d"][2]
    out, res, settings = _run(tmp_path / "cc", group, ps, (1, 24, 40), clients[2])
    agg = res.stages["agglomerate"]
    assert agg["method"] == "two-tier stitch (tree of tasks)"
    assert agg["counts"]["tier2_links"] > 0 and agg["counts"]["tier2_groups"] > 0
    out, res, settings = _run(tmp_path / "mws", group, ps, (1, 24, 40), clients[2], partition="mutex_watershed")
    np.testing.assert_array_equal(out, _reference(group, settings))
    assert res.stages["agglomerate"]["method"] == "mutex_watershed (in memory)"


@pytest.mark.parametrize("name", ["nuclei2d", "worms2d"])
@pytest.mark.parametrize("mode, leaf, method", [
    ("flat", None, "two-tier stitch (one task)"), ("hierarchical", 1, "two-tier stitch (tree of tasks)"),
    ("auto", 2, "two-tier stitch (tree of tasks)")])
def test_stitch_as_one_task_or_a_tree(name, mode, leaf, method, datasets, clients, tmp_path, monkeypatch):
    """[vote] agglomeration: the stitch in one task, or a tree of tasks with leaves of 1 or 2 blocks and fan-in 2
    (several levels on these 8-12 blocks); without (nuclei) and with (worms) tier-2 links; same bytes."""
    from ppp_dist.pipeline import agglomerate

    if leaf is not None:
        monkeypatch.setattr(agglomerate, "BLOCKS_PER_LEAF", leaf)
        monkeypatch.setattr(agglomerate, "FAN_IN", 2)
    group = datasets(name)
    cfg = _config(tmp_path, DATASETS[name][2], (1, 24, 32), agglomeration=mode)
    res = run_pipeline(cfg, tmp_path / "exp", client=clients[2], prediction=group)
    agg = res.stages["agglomerate"]
    assert agg["method"] == method
    if leaf == 1:
        assert agg["counts"]["stitch_tasks"] > res.stages["vote"]["blocks"]  # leaves + at least 2 levels
    out = np.asarray(open_array(res.output)[...])
    np.testing.assert_array_equal(out, _reference(group, assembly_settings(cfg)))


def test_soft_noisy_prediction_and_small_instance_removal(datasets, clients, tmp_path):
    """Soft, noisy patches (not the oracle) and min_instance_size > 0 (the relabel stage) stay exact."""
    from _pipeline_helpers import write_prediction

    from ppp_dist.data import crossing_worms_2d
    from ppp_dist.ops.patches import numinst_onehot, numinst_target, patch_targets

    inst = crossing_worms_2d(shape=(80, 80), n_worms=3, width=(5, 7), seed=4).instances
    ps = (1, 7, 7)
    rng = np.random.default_rng(0)
    patches = np.where(patch_targets(inst, ps) > 0, 0.8, 0.2)
    flip = rng.random(patches.shape) < 0.05
    patches[flip] = 1 - patches[flip]
    group = write_prediction(tmp_path / "pred.zarr", np.rint(patches * 255).astype(np.uint8),
                             np.rint(numinst_onehot(numinst_target(inst)) * 255).astype(np.uint8), (1, 8, 8))
    cfg_extra = {"postprocess": {"min_instance_size": 30}}
    table = {"model": {"patch_shape": list(ps)}, "vote": {"block_shape": [1, 24, 32]},
             "database": {"path": str(tmp_path / "graph.sqlite")}, **cfg_extra}
    cfg = config_from_table(table)
    settings = assembly_settings(cfg)
    res = run_pipeline(cfg, tmp_path / "exp", client=clients[2], prediction=group)
    out = np.asarray(open_array(res.output)[...])
    np.testing.assert_array_equal(out, whole_volume(group, settings))
    assert res.removed_instances > 0 and "relabel" in res.stages


@pytest.mark.slow
def test_flylight_crop(clients, tmp_path):
    """The FlyLight crop (3 overlapping neurons + fragments, 7^3 patches; halo 33 voxels, so a block reads most of
    the crop): three block shapes that do not divide the 50^3 crop, 2 and 1 workers."""
    from ppp_dist.data import load_flylight

    group = write_oracle(tmp_path / "pred.zarr", load_flylight().instances, (7, 7, 7), (5, 5, 5))
    for i, block in enumerate([(25, 50, 50), (20, 30, 40), (15, 15, 35)]):
        out, res, settings = _run(tmp_path / f"b{i}", group, (7, 7, 7), block, clients[2 if i < 2 else 1])
        np.testing.assert_array_equal(out, _reference(group, settings))
        vote = res.stages["vote"]
        assert vote["counts"]["patch_edges"] > 10 * vote["counts"]["rows"]  # the contraction at work


@pytest.mark.postgres
@pytest.mark.parametrize("name, block", [("tubes3d", (16, 20, 12)), ("worms2d", (1, 24, 40)),
                                         ("nuclei2d", (1, 24, 48))])
def test_postgres_backend(name, block, datasets, clients, tmp_path, postgres_dsn):
    db = {"backend": "postgres", "dsn": postgres_dsn}
    group = datasets(name)
    out, res, settings = _run(tmp_path, group, DATASETS[name][2], block, clients[2], db=db)
    np.testing.assert_array_equal(out, _reference(group, settings))
    store = open_graph_store(DatabaseConfig(backend="postgres", dsn=db["dsn"]))
    try:
        assert store.num_clusters() == res.stages["agglomerate"]["clusters"]
    finally:
        store.close()
