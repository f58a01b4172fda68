"""ppp+dec: the decoder is trained jointly and decode stores sigmoid probabilities at foreground voxels."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from _learning_helpers import TINY_2D, make_config

from ppp_dist.errors import ConfigError
from ppp_dist.io.volumes import open_array, prepare_array
from ppp_dist.learning.decode import decode_codes, decode_volume, foreground_mask
from ppp_dist.learning.model import build_model, load_network, save_checkpoint
from ppp_dist.learning.predict import to_storage
from ppp_dist.learning.train import run_train
from ppp_dist.pipeline.predict import predict_volume

CODES = {**TINY_2D, "head": "codes", "code_units": 8, "decoder": {"code_shape": [2, 1, 2, 2], "num_fmaps": [4, 2]}}


def test_decode_codes_applies_the_sigmoid():
    torch.manual_seed(0)
    net = build_model(make_config(model=CODES).model, 1)
    codes = np.random.default_rng(0).random((7, 8), dtype=np.float32)
    probs = decode_codes(net.decoder, codes, batch_size=3)
    with torch.no_grad():
        expected = torch.sigmoid(net.decoder(torch.from_numpy(codes))).numpy()
    assert probs.shape == (7, 25) and probs.min() >= 0.0 and probs.max() <= 1.0
    np.testing.assert_allclose(probs, expected, atol=1e-6)


def test_foreground_mask_rules():
    numinst = np.array([[200, 100, 0]], dtype=np.uint8)[:, None, None]  # P(bg) per voxel
    numinst = np.concatenate([numinst, 255 - numinst, np.zeros_like(numinst)])
    np.testing.assert_array_equal(foreground_mask(numinst, 0.5)[0, 0], [False, True, True])
    fg = np.array([[[[100, 128, 255]]]], dtype=np.uint8)
    np.testing.assert_array_equal(foreground_mask(fg, 0.5)[0, 0], [False, True, True])


def test_decode_volume_writes_sigmoid_patches_only_on_foreground(tmp_path):
    config = make_config(model=CODES, prediction={"device": "cpu", "decode_foreground_threshold": 0.5})
    torch.manual_seed(1)
    checkpoint = save_checkpoint(tmp_path / "checkpoint_1.pt", build_model(config.model, 1), iteration=1)
    rng = np.random.default_rng(2)
    shape = (1, 6, 10)
    codes = rng.random((8,) + shape).astype(np.float16)
    pbg = rng.integers(0, 256, size=shape).astype(np.uint8)
    numinst = np.stack([pbg, 255 - pbg, np.zeros_like(pbg)])
    store = tmp_path / "pred.zarr"
    prepare_array(f"{store}/codes", shape=codes.shape, chunks=(8, 1, 3, 5), dtype="float16", axes="czyx")[...] = codes
    prepare_array(f"{store}/numinst", shape=numinst.shape, chunks=(3, 1, 3, 5), dtype="uint8",
                  axes="czyx")[...] = numinst
    summary = decode_volume(config, checkpoint, store)
    patches = open_array(f"{store}/patches")[...]
    fg = pbg / 255.0 < 0.5
    assert summary["voxels_decoded"] == int(fg.sum()) and summary["blocks"] == 4
    decoder = load_network(config.model, 1, checkpoint, "cpu").decoder
    expected = to_storage("patches", decode_codes(decoder, codes[:, fg].T.astype(np.float32)).T)
    np.testing.assert_array_equal(patches[:, fg], expected)
    assert (patches[:, ~fg] == 0).all()


def test_decode_needs_a_codes_model(tmp_path):
    with pytest.raises(ConfigError, match="head = 'codes'"):
        decode_volume(make_config(model=TINY_2D), tmp_path / "c.pt", tmp_path / "p.zarr")


def test_ppp_dec_trains_predicts_and_decodes(nuclei_sample, tmp_path):
    config = make_config(nuclei_sample, model=CODES, training={"log_every": 5},
                         prediction={"device": "cpu", "patch_dtype": "uint8"})
    summary = run_train(config, tmp_path / "exp", max_iterations=10)
    assert np.isfinite(summary["final_loss"])
    predict_volume(config, summary["checkpoint"], f"{nuclei_sample}/raw", tmp_path / "pred.zarr")
    assert open_array(f"{tmp_path}/pred.zarr/codes").dtype == np.float16
    decode_volume(config, summary["checkpoint"], tmp_path / "pred.zarr")
    assert open_array(f"{tmp_path}/pred.zarr/patches").shape == (25, 1, 64, 64)
