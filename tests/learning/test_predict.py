"""Tiled in-process prediction equals one pass of the network over the whole (zero-padded) volume."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from _learning_helpers import TINY_2D, TINY_3D, make_config

from ppp_dist.errors import CheckpointError, InputDataError
from ppp_dist.io.volumes import open_array, prepare_array
from ppp_dist.learning.model import build_model, load_network, save_checkpoint
from ppp_dist.learning.predict import predict_tile, tile_geometry, to_storage
from ppp_dist.pipeline.predict import predict_volume


def _write_raw(path, shape, seed=0):
    rng = np.random.default_rng(seed)
    raw = rng.random(shape, dtype=np.float32)
    arr = prepare_array(f"{path}/raw", shape=shape, chunks=shape, dtype="float32", axes="czyx")
    arr[...] = raw
    return raw


def _checkpoint(config, tmp_path, recorded=True):
    """A random network's checkpoint; ``recorded``: with the normalisation settings a training records (an
    older model has none, and was trained with zeros outside the volume)."""
    from ppp_dist.learning.normalize import settings_of

    torch.manual_seed(0)
    net = build_model(config.model, config.data.num_channels)
    for p in net.parameters():  # make the random network's outputs vary strongly in space
        p.data.mul_(1.5)
    return save_checkpoint(tmp_path / "train" / "checkpoint_1.pt", net, iteration=1,
                           normalization=settings_of(config.data) if recorded else None)


def _single_pass(config, checkpoint, raw, mode="symmetric", flip=()):
    """Whole volume, mirrored at its border (or zero-padded: ``mode="constant"``) by the context (+ up to one
    tile at the far end), in one forward pass; ``flip``: the padded volume flipped along these spatial axes
    (0 = Z) for the pass, its outputs flipped back (patch windows included)."""
    geometry = tile_geometry(config.model)
    net = load_network(config.model, raw.shape[0], checkpoint, "cpu")
    spatial = raw.shape[1:]
    n = [-(-s // o) for s, o in zip(spatial, geometry.output_shape)]
    pads = [(0, 0)] + [(c, k * o + c - s) for s, k, o, c in zip(spatial, n, geometry.output_shape, geometry.context)]
    padded = np.pad(raw.astype(np.float32), pads, mode=mode)
    dims = [2 + a for a in flip]
    with torch.no_grad():
        patch_logits, numinst_logits = net(torch.flip(torch.from_numpy(padded)[None], dims))
    if flip:
        numinst_logits = torch.flip(numinst_logits, dims)
        n, p, *spatial_out = patch_logits.shape
        windows = patch_logits.reshape(n, *config.model.patch_shape, *spatial_out)
        patch_logits = torch.flip(windows, [1 + a for a in flip] + [4 + a for a in flip]).reshape(n, p, *spatial_out)
    crop = (0, slice(None)) + tuple(slice(m, m + s) for m, s in zip(geometry.net_crop, spatial))
    return {"numinst": torch.softmax(numinst_logits, 1)[crop].numpy(),
            "patches": torch.sigmoid(patch_logits)[crop].numpy()}


CASES = {
    "2d valid": (TINY_2D, (1, 2, 37, 61)),
    "2d same": ({**TINY_2D, "padding": "same", "predict_input_shape": [1, 64, 64]}, (1, 1, 29, 50)),
    "3d valid": (TINY_3D, (3, 13, 21, 17)),
    "3d same": ({**TINY_3D, "padding": "same", "predict_input_shape": [24, 24, 24]}, (3, 11, 9, 26)),
}


@pytest.mark.parametrize("name", sorted(CASES))
@pytest.mark.parametrize("patch_dtype", ["uint8", "float16"])
@pytest.mark.parametrize("zero", [False, True], ids=["as-predicted", "zeroed-background"])
def test_tiled_prediction_equals_single_pass(name, patch_dtype, zero, tmp_path):
    """With [prediction] zero_background (the default) the patches of voxels that the assembly counts as
    background (numinst 0 at [vote] numinst_thresholds) are stored as 0; every other value is the single pass's."""
    from ppp_dist.ops._geometry import numinst_from_prob

    model, shape = CASES[name]
    config = make_config(model=model, data={"num_channels": shape[0]},
                         prediction={"device": "cpu", "patch_dtype": patch_dtype, "batch_size": 2,
                                     "zero_background": zero})
    geometry = tile_geometry(config.model)
    assert any(s % o for s, o in zip(shape[1:], geometry.output_shape)), "the volume must not be a tile multiple"
    raw = _write_raw(tmp_path / "in.zarr", shape)
    checkpoint = _checkpoint(config, tmp_path)
    summary = predict_volume(config, checkpoint, f"{tmp_path}/in.zarr/raw", tmp_path / "out.zarr")
    assert summary["tiles"] > 1
    expected = _single_pass(config, checkpoint, raw)
    numinst = open_array(f"{tmp_path}/out.zarr/numinst")[...]
    patches = open_array(f"{tmp_path}/out.zarr/patches")[...]
    assert numinst.dtype == np.uint8 and numinst.shape == (3,) + shape[1:]
    assert patches.dtype == np.dtype(patch_dtype) and patches.shape == (int(np.prod(model["patch_shape"])),) + shape[1:]
    assert expected["patches"].std() > 0.05  # a meaningful comparison
    np.testing.assert_allclose(numinst.astype(int), to_storage("numinst", expected["numinst"]).astype(int), atol=1)
    want = to_storage("patches", expected["patches"], patch_dtype)
    if zero:
        background = numinst_from_prob(numinst, config.vote.numinst_thresholds) == 0
        assert 0 < background.mean() < 1, "the case should hold both background and foreground"
        want[:, background] = 0
        assert (patches[:, background] == 0).all()
    if patch_dtype == "uint8":
        np.testing.assert_allclose(patches.astype(int), want.astype(int), atol=1)
    else:
        np.testing.assert_allclose(patches.astype(np.float32), want.astype(np.float32), atol=2e-3)


def test_an_older_checkpoint_is_predicted_with_zeros_outside_the_volume(tmp_path):
    """Checkpoints without recorded settings were trained with zeros outside the volume: predicted so."""
    model, shape = CASES["2d valid"]
    config = make_config(model=model, data={"num_channels": shape[0]}, prediction={"device": "cpu"})
    raw = _write_raw(tmp_path / "in.zarr", shape)
    checkpoint = _checkpoint(config, tmp_path, recorded=False)
    predict_volume(config, checkpoint, f"{tmp_path}/in.zarr/raw", tmp_path / "out.zarr")
    numinst = open_array(f"{tmp_path}/out.zarr/numinst")[...]
    zeros = to_storage("numinst", _single_pass(config, checkpoint, raw, mode="constant")["numinst"])
    mirror = to_storage("numinst", _single_pass(config, checkpoint, raw)["numinst"])
    np.testing.assert_allclose(numinst.astype(int), zeros.astype(int), atol=1)
    assert np.abs(numinst.astype(int) - mirror.astype(int)).max() > 1  # the two paddings do differ


def test_predict_tile_is_a_pure_batched_function(tmp_path):
    config = make_config(model=TINY_2D)
    checkpoint = _checkpoint(config, tmp_path)
    net = load_network(config.model, 1, checkpoint, "cpu")
    geometry = tile_geometry(config.model)
    tiles = np.random.default_rng(1).random((3, 1) + geometry.input_shape, dtype=np.float32)
    batched = predict_tile(net, tiles, geometry)
    single = predict_tile(net, tiles[1], geometry)
    assert set(batched) == {"numinst", "patches"}
    assert batched["patches"].shape == (3, 25) + geometry.output_shape
    np.testing.assert_allclose(batched["patches"][1], single["patches"], atol=1e-5)
    np.testing.assert_allclose(batched["numinst"].sum(axis=1), 1.0, atol=1e-5)
    with pytest.raises(ValueError, match="does not match the network input"):
        predict_tile(net, tiles[:, :, :, :10], geometry)


def test_foreground_head_writes_fg(tmp_path):
    config = make_config(model={**TINY_2D, "numinst_head": "foreground"})
    _write_raw(tmp_path / "in.zarr", (1, 1, 20, 20))
    predict_volume(config, _checkpoint(config, tmp_path), f"{tmp_path}/in.zarr/raw", tmp_path / "out.zarr")
    assert open_array(f"{tmp_path}/out.zarr/fg").shape == (1, 1, 20, 20)


def test_wrong_channels_and_wrong_checkpoint_are_clear_errors(tmp_path):
    config = make_config(model=TINY_2D)
    checkpoint = _checkpoint(config, tmp_path)
    _write_raw(tmp_path / "in.zarr", (2, 1, 20, 20))
    with pytest.raises(InputDataError, match="has 2 channels but \\[data\\] num_channels = 1"):
        predict_volume(config, checkpoint, f"{tmp_path}/in.zarr/raw", tmp_path / "out.zarr")
    other = make_config(model={**TINY_2D, "num_fmaps": 5}, data={"num_channels": 2})
    with pytest.raises(CheckpointError, match="num_fmaps is 4 in the checkpoint but 5"):
        predict_volume(other, checkpoint, f"{tmp_path}/in.zarr/raw", tmp_path / "out.zarr")


@pytest.mark.parametrize("cause", ["nan_weights", "huge_input"])
def test_network_output_that_is_not_finite_is_refused_not_stored(tmp_path, cause):
    """NaN weights, or raw values near 1e38 with normalization none, make NaN logits: refused in one sentence
    (they used to be stored as 0 and the run exited 0)."""
    config = make_config(model=TINY_2D)
    checkpoint = _checkpoint(config, tmp_path)
    net = load_network(config.model, 1, checkpoint, "cpu")
    geometry = tile_geometry(config.model)
    tiles = np.random.default_rng(1).random((1, 1) + geometry.input_shape, dtype=np.float32)
    if cause == "nan_weights":
        net = build_model(config.model, 1).eval()
        with torch.no_grad():
            next(net.parameters()).fill_(float("nan"))
    else:  # values near the float32 limit: the first convolution's sums overflow (inf - inf = NaN)
        tiles[..., ::2] = 1e38
        tiles[..., 1::2] = -1e38
    with pytest.raises(InputDataError, match="the network's output holds NaN or infinite values"):
        predict_tile(net, tiles, geometry)


@pytest.mark.parametrize("name", ["2d valid", "2d same", "3d valid"])
def test_test_time_flips_average_the_flipped_volumes(name, tmp_path):
    """[prediction] test_time_flips: tiled prediction equals the mean of single passes over the volume flipped
    along every subset of its spatial axes (4 in 2D, 8 in 3D), each flipped back, patch windows included. (The
    volume is padded before it is flipped, so that the downsampling grid stays where the tiles put it.)"""
    from ppp_dist.learning.predict import flip_sets

    model, shape = CASES[name]
    config = make_config(model=model, data={"num_channels": shape[0]},
                         prediction={"device": "cpu", "zero_background": False, "test_time_flips": True})
    raw = _write_raw(tmp_path / "in.zarr", shape)
    checkpoint = _checkpoint(config, tmp_path)
    predict_volume(config, checkpoint, f"{tmp_path}/in.zarr/raw", tmp_path / "out.zarr")
    flips = flip_sets(tile_geometry(config.model).input_shape)
    assert len(flips) == (4 if model["patch_shape"][0] == 1 else 8)
    passes = [_single_pass(config, checkpoint, raw, flip=axes) for axes in flips]
    mean = {k: np.mean([p[k] for p in passes], axis=0) for k in ("numinst", "patches")}
    plain = _single_pass(config, checkpoint, raw)
    for key in ("numinst", "patches"):
        stored = open_array(f"{tmp_path}/out.zarr/{key}")[...].astype(int)
        np.testing.assert_allclose(stored, to_storage(key, mean[key]).astype(int), atol=1)
        assert np.abs(stored - to_storage(key, plain[key]).astype(int)).max() > 5  # the flips do change it


def test_predictions_with_test_time_flips_are_flip_equivariant(tmp_path):
    """On a volume of whole tiles (so that flipping it flips the tiling), predicting the flipped volume gives
    the flipped prediction: the border and the interior are predicted alike from both sides."""
    model = CASES["2d valid"][0]
    config = make_config(model=model, prediction={"device": "cpu", "zero_background": False,
                                                  "test_time_flips": True})
    out = tile_geometry(config.model).output_shape
    shape = (1, 1, 2 * out[1], 3 * out[2])
    raw = _write_raw(tmp_path / "in.zarr", shape)
    flipped = prepare_array(f"{tmp_path}/flipped.zarr/raw", shape=shape, chunks=shape, dtype="float32", axes="czyx")
    flipped[...] = np.flip(raw, -1)
    checkpoint = _checkpoint(config, tmp_path)
    predict_volume(config, checkpoint, f"{tmp_path}/in.zarr/raw", tmp_path / "a.zarr")
    predict_volume(config, checkpoint, f"{tmp_path}/flipped.zarr/raw", tmp_path / "b.zarr")
    a = open_array(f"{tmp_path}/a.zarr/patches")[...].astype(int)
    b = open_array(f"{tmp_path}/b.zarr/patches")[...]
    windows = b.reshape(tuple(model["patch_shape"]) + b.shape[1:])
    np.testing.assert_allclose(np.flip(windows, (2, 5)).reshape(b.shape).astype(int), a, atol=1)


def test_test_time_flips_refuse_ppp_dec_codes():
    from ppp_dist.config import config_from_table
    from ppp_dist.errors import ConfigError

    with pytest.raises(ConfigError, match="test_time_flips needs predicted patches"):
        config_from_table({"model": {"head": "codes"}, "prediction": {"test_time_flips": True}})
