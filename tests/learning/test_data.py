"""Training crops: sampling by category, augmentations keep raw and GT aligned, batches are reproducible."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from _learning_helpers import TINY_3D, make_config

from ppp_dist.config.sections import AugmentationConfig, DataConfig
from ppp_dist.errors import ConfigError, InputDataError
from ppp_dist.geometry import Box
from ppp_dist.learning import augment
from ppp_dist.learning.dataset import CropDataset, build_sampler
from ppp_dist.learning.sampling import CropGeometry, TrainingSample, choose_output_begin, normalize_raw

DATA = DataConfig(raw_key="raw", gt_key="labels/gt_instances", normalization="none")


def test_sample_lists_foreground_and_overlap_voxels(tubes_sample):
    sample = TrainingSample(str(tubes_sample), DataConfig(raw_key="raw", gt_key="labels/gt_instances",
                                                          normalization="none", num_channels=3), overlap_radius=2)
    gt = sample.read_gt(Box.from_shape(sample.shape))
    count = (gt != 0).sum(axis=0)
    assert len(sample.fg_points) == int((count > 0).sum())
    assert len(sample.overlap_points) > int((count > 1).sum()) > 0  # dilated by the radius
    assert (count[tuple(sample.fg_points.T)] > 0).all()


@pytest.mark.parametrize("probabilities, category", [((1.0, 0.0, 0.0), "fg"), ((0.0, 1.0, 0.0), "overlap")])
def test_crops_contain_the_drawn_category(tubes_sample, probabilities, category):
    sample = TrainingSample(str(tubes_sample), DataConfig(raw_key="raw", gt_key="labels/gt_instances",
                                                          normalization="none", num_channels=3))
    geometry = CropGeometry((12, 12, 12), (4, 4, 4), (3, 3, 3))
    rng = np.random.default_rng(0)
    points = {tuple(p) for p in (sample.fg_points if category == "fg" else sample.overlap_points)}
    for _ in range(20):
        _, out_box, _ = geometry.boxes(choose_output_begin(sample, geometry, probabilities, rng))
        inside = [p for p in points if out_box.contains(p)]
        assert inside


def test_reading_outside_the_volume_mirrors_raw_and_pads_gt_with_background(nuclei_sample):
    sample = TrainingSample(str(nuclei_sample), DATA)
    shape = sample.shape
    box = Box((0, -5, shape[2] - 4), (1, 5, shape[2] + 6))  # 5 rows above the volume, 6 columns right of it
    raw, gt = sample.read_raw(box), sample.read_gt(box)
    assert raw.shape == (1, 1, 10, 10) and gt.shape == (1, 1, 10, 10)
    inside = sample.read_raw(Box((0, 0, shape[2] - 4), (1, 5, shape[2])))
    np.testing.assert_array_equal(raw[:, :, 5:, :4], inside)
    np.testing.assert_array_equal(raw[:, :, :5, :4], inside[:, :, ::-1])  # mirrored at the top border
    np.testing.assert_array_equal(raw[:, :, 5:, 4:8], inside[:, :, :, ::-1])  # and at the right border
    assert (gt[:, :, :5] == 0).all() and (gt[:, :, :, 4:] == 0).all()


def test_undeformed_transform_reproduces_the_plain_crop(nuclei_sample):
    sample = TrainingSample(str(nuclei_sample), DATA)
    aug = AugmentationConfig(elastic_jitter_sigma=0.0, rotation_max_degrees=0.0)
    raw_box, gt_box = Box((0, 10, 12), (1, 40, 42)), Box((0, 18, 20), (1, 32, 34))
    raw, gt = augment.deformed_crop(sample.read_raw, sample.read_gt, raw_box, gt_box, np.random.default_rng(0),
                                    aug, planar=True)
    np.testing.assert_allclose(raw, sample.read_raw(raw_box), atol=1e-5)
    np.testing.assert_array_equal(gt, sample.read_gt(gt_box))


def test_deformation_moves_raw_and_gt_together():
    labels = np.zeros((1, 1, 40, 40), np.int64)
    labels[0, 0, 10:30, 12:25] = 3
    read_gt = lambda box: _read(labels, box)  # noqa: E731
    read_raw = lambda box: _read(labels, box).astype(np.float32)  # noqa: E731
    aug = AugmentationConfig(elastic_jitter_sigma=2.0, elastic_control_point_spacing=8, rotation_max_degrees=30)
    box = Box((0, 0, 0), (1, 40, 40))
    raw, gt = augment.deformed_crop(read_raw, read_gt, box, box, np.random.default_rng(3), aug, planar=True)
    assert not np.array_equal(gt, labels)
    agree = ((raw > 1.5) == (gt == 3)).mean()
    assert agree > 0.98


def _read(array, box):
    out = np.zeros(array.shape[:1] + box.shape, array.dtype)
    inner = box.intersect(Box.from_shape(array.shape[1:]))
    if not inner.empty:
        out[(slice(None), *inner.relative_to(box))] = array[(slice(None), *inner.slices)]
    return out


def test_mirror_transpose_applies_the_same_change_to_raw_and_gt():
    rng = np.random.default_rng(0)
    gt = rng.integers(0, 5, size=(2, 6, 6, 6))
    for seed in range(10):
        raw, out = augment.mirror_transpose(gt.astype(np.float32), gt, np.random.default_rng(seed), planar=False)
        np.testing.assert_array_equal(raw, out)
    planar = rng.integers(0, 5, size=(1, 1, 6, 6))
    raw, out = augment.mirror_transpose(planar.astype(np.float32), planar, np.random.default_rng(1), planar=True)
    assert out.shape == (1, 1, 6, 6)


def test_hue_change_keeps_grey_and_range():
    rng = np.random.default_rng(0)
    raw = rng.random((3, 2, 4, 4), dtype=np.float32)
    changed = augment.change_hue(raw, np.random.default_rng(1), 1.0, 0.5)
    assert changed.shape == raw.shape and changed.dtype == np.float32 and not np.allclose(changed, raw)
    assert changed.min() >= 0.0 and changed.max() <= 1.0
    np.testing.assert_allclose(changed.max(axis=0), raw.max(axis=0), atol=1e-6)  # value (HSV V) is kept
    grey = np.full((3, 1, 2, 2), 0.4, np.float32)
    np.testing.assert_allclose(augment.change_hue(grey, np.random.default_rng(1), 1.0, 0.5), grey, atol=1e-6)
    one = raw[:1]
    assert augment.change_hue(one, np.random.default_rng(1), 1.0, 0.5) is one


def test_overlay_adds_raw_and_stacks_gt():
    raw, gt = augment.overlay(np.full((1, 2, 2, 2), 0.7, np.float32), np.ones((1, 2, 2, 2), np.int64),
                              np.full((1, 2, 2, 2), 0.6, np.float32), np.full((2, 2, 2, 2), 4, np.int64), (0.0, 1.0))
    assert raw.max() == 1.0 and gt.shape == (3, 2, 2, 2)


def test_normalisation_modes():
    raw = np.array([0, 750, 3000], dtype=np.uint16)
    np.testing.assert_allclose(normalize_raw(raw, DataConfig(normalization="clip", clip_max=1500)), [0, 0.5, 1])
    np.testing.assert_allclose(normalize_raw(raw.astype(np.uint8), DataConfig(normalization="none")),
                               raw.astype(np.uint8) / 255)
    shifted = normalize_raw(np.array([0.0, 1.0], np.float32), DataConfig(normalization="none", shift_intensity=True))
    np.testing.assert_allclose(shifted, [-1, 1])


def test_batches_are_a_function_of_the_iteration(tubes_sample):
    config = make_config(tubes_sample, model=TINY_3D, data={"num_channels": 3},
                         training={"augmentation": {"probability_overlay": 0.5}})
    geometry = CropGeometry((20, 20, 20), (4, 4, 4), (3, 3, 3))
    sampler = build_sampler(config, config.data.train_data, geometry, augment_crops=True)
    stream = iter(CropDataset(sampler, batch_size=2, seed=1, start_iteration=0))
    first = [next(stream) for _ in range(3)]
    resumed = next(iter(CropDataset(sampler, batch_size=2, seed=1, start_iteration=2)))
    torch.testing.assert_close(resumed[0], first[2][0])
    torch.testing.assert_close(resumed[1], first[2][1])
    assert first[0][0].shape == (2, 3, 20, 20, 20) and first[0][1].shape[2:] == (6, 6, 6)


def test_bad_training_inputs_are_clear_errors(nuclei_sample, tmp_path):
    config = make_config(tmp_path / "missing.zarr")
    geometry = CropGeometry((1, 56, 56), (1, 16, 16), (1, 5, 5))
    with pytest.raises(ConfigError, match="does not exist"):
        build_sampler(config, config.data.train_data, geometry, augment_crops=False)
    with pytest.raises(InputDataError, match="has 1 channels but \\[data\\] num_channels = 3"):
        TrainingSample(str(nuclei_sample), DataConfig(raw_key="raw", gt_key="labels/gt_instances", num_channels=3))
