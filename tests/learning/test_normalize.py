"""Raw normalisation (ppp_dist.learning.normalize): the modes, one set of numbers per volume, the checkpoint's
settings in prediction, and the refusal of a nearly constant training input."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest
from _learning_helpers import make_config

from ppp_dist.config.sections import DataConfig
from ppp_dist.errors import InputDataError
from ppp_dist.geometry import Box
from ppp_dist.io.volumes import open_array, prepare_array
from ppp_dist.learning.model import read_normalization
from ppp_dist.learning.normalize import MIN_SPREAD, fit, for_prediction, strided_subsample
from ppp_dist.learning.predict import read_input_tile, tile_geometry
from ppp_dist.learning.sampling import TrainingSample
from ppp_dist.learning.train import run_train
from ppp_dist.pipeline.predict import predict_volume

OFFSET, RANGE = 33_000, 3_900  # the 16-bit camera of issue 17: values between 33,000 and 36,900


@pytest.fixture(scope="module")
def camera_sample(nuclei_sample, tmp_path_factory):
    """The synthetic nuclei as a 16-bit camera records them: a large offset, a small range."""
    path = tmp_path_factory.mktemp("camera") / "camera.zarr"
    raw = open_array(f"{nuclei_sample}/raw")[...]
    gt = open_array(f"{nuclei_sample}/labels/gt_instances")[...]
    counts = np.rint(OFFSET + RANGE * np.clip(raw, 0, 1)).astype(np.uint16)
    prepare_array(f"{path}/raw", shape=counts.shape, chunks=counts.shape, dtype="uint16")[...] = counts
    prepare_array(f"{path}/labels/gt_instances", shape=gt.shape, chunks=gt.shape, dtype=gt.dtype)[...] = gt
    return path


def test_modes_map_the_documented_values_to_0_and_1():
    raw = np.arange(1000, dtype=np.uint16).reshape(1, 1, 10, 100) + 30_000
    pct = fit(raw, DataConfig(normalization="percentile", percentile_low=1.0, percentile_high=99.0))(raw)
    assert np.percentile(pct, 1) == pytest.approx(0.0, abs=1e-6)
    assert np.percentile(pct, 99) == pytest.approx(1.0, abs=1e-6)
    mm = fit(raw, DataConfig(normalization="minmax"))(raw)
    assert mm.min() == 0.0 and mm.max() == 1.0
    dt = fit(raw, DataConfig(normalization="dtype"))(raw)
    np.testing.assert_allclose(dt, raw / 65535.0, rtol=1e-6)
    fx = fit(raw, DataConfig(normalization="fixed", fixed_offset=(30_000.0,), fixed_scale=(500.0,)))(raw)
    np.testing.assert_allclose(fx, (raw - 30_000.0) / 500.0, rtol=1e-6)
    shifted = fit(raw, DataConfig(normalization="minmax", shift_intensity=True))(raw)
    assert shifted.min() == -1.0 and shifted.max() == 1.0


def test_percentile_values_are_found_per_channel():
    raw = np.stack([np.linspace(0, 10, 4000), np.linspace(100, 300, 4000)]).reshape(2, 1, 40, 100)
    norm = fit(raw, DataConfig(normalization="minmax", num_channels=2))
    assert norm.offset == pytest.approx((0.0, 100.0)) and norm.scale == pytest.approx((10.0, 200.0))


def test_strided_subsample_covers_the_volume_within_its_budget():
    arr = np.arange(64 * 100 * 90, dtype=np.float32).reshape(64, 100, 90)
    values = strided_subsample(arr, max_voxels=100_000)
    assert values.shape[0] == 1 and 8 * 16 ** 3 <= values.shape[1] <= 100_000
    assert values.min() == 0 and values.max() == arr.max()  # blocks at both corners of the volume
    np.testing.assert_array_equal(strided_subsample(arr[:8], max_voxels=100_000)[0], arr[:8].ravel())  # small: all


def test_every_prediction_tile_uses_the_same_two_numbers(camera_sample, tmp_path):
    """Blockwise prediction: the numbers are found once for the volume, not per tile."""
    config = make_config(camera_sample, data={"raw_key": "raw", "normalization": "percentile"})
    resolved = for_prediction(config, f"{camera_sample}/raw", checkpoint_without_settings(config, tmp_path))
    assert resolved.data.normalization == "fixed"
    arr = open_array(f"{camera_sample}/raw")
    geometry = tile_geometry(config.model)
    whole = fit(arr, config.data)
    for begin in ((0, 0, 0), (0, 32, 32)):
        box = Box(begin, tuple(b + o for b, o in zip(begin, geometry.output_shape)))
        tile = read_input_tile(arr, box, geometry, resolved.data)
        # input voxel context + k is volume voxel begin + k: the same value as the whole-volume normaliser gives
        crop = tuple(slice(c, c + 8) for c in geometry.context)
        raw = np.asarray(arr[..., begin[0]:begin[0] + 1, begin[1]:begin[1] + 8, begin[2]:begin[2] + 8])
        np.testing.assert_allclose(tile[(slice(None), *crop)], whole(raw.reshape((-1, 1, 8, 8))), rtol=1e-5)


def checkpoint_without_settings(config, tmp_path):
    """A checkpoint of ``config``'s network trained for one iteration on the camera sample."""
    return run_train(config, tmp_path / "one", max_iterations=1)["checkpoint"]


def test_dtype_on_16_bit_data_with_a_large_offset_is_refused_in_one_sentence(camera_sample, tmp_path):
    config = make_config(camera_sample, data={"normalization": "dtype"})
    with pytest.raises(InputDataError) as err:
        run_train(config, tmp_path / "exp", max_iterations=5)
    message = str(err.value)
    assert "nearly constant" in message and 'normalization = "percentile"' in message
    assert "\n" not in message and "span only 0.05" in message  # 3,900 of 65,535
    assert not (tmp_path / "exp" / "train" / "checkpoint_5.pt").exists()


def test_16_bit_data_with_a_large_offset_trains_with_percentile(camera_sample, nuclei_sample, tmp_path):
    config = make_config(camera_sample, data={"normalization": "percentile"},
                         training={"log_every": 20, "learning_rate": 3e-3})
    sample = TrainingSample(str(camera_sample), config.data)
    values = sample.read_raw(Box((0, 0, 0), sample.shape))
    assert values.max() - values.min() > 0.9  # the network sees the full contrast, not 0.06 of it
    summary = run_train(config, tmp_path / "exp", max_iterations=120)
    rows = (tmp_path / "exp" / "train" / "metrics.csv").read_text().splitlines()[1:]
    losses = [float(r.split(",")[1]) for r in rows]
    assert np.isfinite(losses).all() and losses[-1] < 0.8 * losses[0], losses  # it learns
    # the checkpoint records the settings and the numbers found for the sample
    settings = read_normalization(summary["checkpoint"])
    assert settings["normalization"] == "percentile" and settings["percentile_high"] == 99.8
    (offset,) = settings["samples"][str(camera_sample)]["offset"]
    assert OFFSET <= offset < OFFSET + RANGE / 2
    # predict uses the checkpoint's normalisation even if the config says otherwise now
    wrong = dataclasses.replace(config, data=dataclasses.replace(config.data, normalization="dtype"))
    predict_volume(wrong, summary["checkpoint"], f"{camera_sample}/raw", tmp_path / "a.zarr")
    predict_volume(config, summary["checkpoint"], f"{camera_sample}/raw", tmp_path / "b.zarr")
    np.testing.assert_array_equal(open_array(f"{tmp_path}/a.zarr/numinst")[...],
                                  open_array(f"{tmp_path}/b.zarr/numinst")[...])


def test_the_spread_limit_is_the_documented_one():
    raw = (np.arange(1000, dtype=np.uint16).reshape(1, 1, 10, 100) % 60) + 33_000
    data = DataConfig(normalization="dtype")
    from ppp_dist.learning.normalize import check_spread

    with pytest.raises(InputDataError, match="percentile"):
        check_spread(raw, fit(raw, data), data, "sample")
    check_spread(raw, fit(raw, DataConfig(normalization="minmax")), DataConfig(normalization="minmax"), "sample")
    assert MIN_SPREAD == 0.1


def test_a_constant_volume_cannot_be_percentile_normalised():
    raw = np.full((1, 1, 8, 8), 7, np.uint16)
    with pytest.raises(InputDataError, match="constant"):
        fit(raw, DataConfig(normalization="percentile"))


def test_the_cli_refuses_dtype_on_camera_data_before_writing_anything(camera_sample, tmp_path, capsys):
    from ppp_dist.cli import main

    code = main(["train", "--root", str(tmp_path / "runs"), "--set", f"data.train_data=['{camera_sample}']",
                 "--set", 'data.raw_key="raw"', "--set", 'data.gt_key="labels/gt_instances"',
                 "--set", 'data.normalization="dtype"'])
    err = capsys.readouterr().err
    assert code == 2 and err.count("\n") == 1 and 'use [data] normalization = "percentile"' in err
    assert not (tmp_path / "runs").exists()
