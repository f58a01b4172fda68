"""The in-process ``label`` is the blockwise pipeline with one block and ``client=None`` (one code path):
it gives the bytes of the whole-volume ``ops.assemble``, leaves no work folder or database behind, raises a
block's error in one sentence, and keeps ``ops.assemble`` only for the greedy cover."""

from __future__ import annotations

import numpy as np
import pytest
from _pipeline_helpers import whole_volume, write_oracle, write_prediction

from ppp_dist.config import config_from_table
from ppp_dist.errors import InputDataError
from ppp_dist.io.volumes import open_array
from ppp_dist.pipeline.settings import assembly_settings
from ppp_dist.tasks.label import label_volume

CASES = {
    # name: (generator, kwargs, patch_shape, [vote] overrides)
    "tubes3d_overlap": ("crossing_tubes_3d", dict(shape=(32, 32, 32), n_tubes=3, seed=1), (5, 5, 5),
                        {"overlap_channels": True}),
    "nuclei2d_mws": ("touching_nuclei_2d", dict(shape=(80, 80), n=10, radius=(5, 9), seed=3), (1, 11, 11),
                     {"partition": "mutex_watershed"}),
    "worms2d": ("crossing_worms_2d", dict(shape=(96, 96), n_worms=3, width=(5, 7), seed=2), (1, 9, 9), {}),
}


def _config(patch_shape, **vote):
    # a PostgreSQL [database] must not be touched: the in-process label keeps its graph in a private SQLite file
    return config_from_table({"model": {"patch_shape": list(patch_shape)},
                              "vote": {"blockwise": False, **vote},
                              "database": {"backend": "postgres", "dsn": "postgresql://nobody@127.0.0.1:9/none"}})


def _leftovers(folder):
    return sorted(p.name for p in folder.iterdir() if p.name not in ("pred.zarr", "out.zarr"))


@pytest.mark.parametrize("name", sorted(CASES))
def test_in_process_label_equals_whole_volume_assembly(name, tmp_path):
    import ppp_dist.data as data

    gen, kwargs, ps, vote = CASES[name]
    sample = getattr(data, gen)(**kwargs)
    group = write_oracle(tmp_path / "pred.zarr", sample.instances, ps, (8, 8, 8) if ps[0] > 1 else (1, 16, 16))
    config = _config(ps, **vote)
    summary = label_volume(config, group, tmp_path / "out.zarr")
    out = np.asarray(open_array(f"{tmp_path}/out.zarr/instances")[...])
    ref = whole_volume(group, assembly_settings(config))
    assert ref.max() >= 3, "the scene should hold several instances"
    assert out.dtype == np.uint32 and out.shape == ref.shape
    np.testing.assert_array_equal(out, ref)
    assert summary["instances"] == ref.max()
    assert summary["selected_patches"] > summary["instances"]
    assert summary["foreground_voxels"] == int(np.count_nonzero(sample.instances.max(axis=0)))
    assert set(summary["step_seconds"]) >= {"vote", "agglomerate", "paint"}
    assert _leftovers(tmp_path) == [], "the work folder and its database are removed"
    # again over the same output (the in-process label replaces it, as it always did)
    assert label_volume(config, group, tmp_path / "out.zarr")["instances"] == ref.max()
    np.testing.assert_array_equal(np.asarray(open_array(f"{tmp_path}/out.zarr/instances")[...]), ref)


def test_a_block_error_is_raised_in_one_sentence_and_nothing_is_left_behind(tmp_path):
    rng = np.random.default_rng(0)
    patches = rng.random((25, 1, 24, 24)).astype(np.float32)
    patches[3, 0, 5, 5] = np.nan
    numinst = np.zeros((3, 1, 24, 24), np.float32)
    numinst[1] = 1.0
    group = write_prediction(tmp_path / "pred.zarr", patches, numinst, (1, 12, 12))
    with pytest.raises(InputDataError, match="NaN or inf"):
        label_volume(_config((1, 5, 5)), group, tmp_path / "out.zarr")
    assert _leftovers(tmp_path) == []


def test_greedy_cover_runs_on_the_whole_volume(tmp_path):
    import ppp_dist.data as data

    sample = data.touching_nuclei_2d(shape=(64, 64), n=6, radius=(5, 8), seed=4)
    group = write_oracle(tmp_path / "pred.zarr", sample.instances, (1, 11, 11), (1, 16, 16))
    config = _config((1, 11, 11), selection="greedy")
    summary = label_volume(config, group, tmp_path / "out.zarr")
    out = np.asarray(open_array(f"{tmp_path}/out.zarr/instances")[...])
    np.testing.assert_array_equal(out, whole_volume(group, assembly_settings(config)))
    assert summary["instances"] == out.max() >= 3
    assert "selection" in summary["step_seconds"]  # the ops.assemble steps, not the pipeline stages
    assert _leftovers(tmp_path) == []
