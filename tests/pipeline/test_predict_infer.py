"""Blockwise predict equals the in-process predict_volume (bytes), and run_pipeline from raw equals
predict_volume + whole-volume assemble; bad input is one clear sentence."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from _pipeline_helpers import whole_volume

from ppp_dist.config import config_from_table
from ppp_dist.errors import ConfigError
from ppp_dist.io.volumes import open_array, prepare_array
from ppp_dist.learning.model import build_model, save_checkpoint
from ppp_dist.pipeline.infer import run_pipeline
from ppp_dist.pipeline.predict import predict_volume
from ppp_dist.pipeline.settings import assembly_settings

TINY_2D = {"patch_shape": [1, 5, 5], "num_fmaps": 4, "fmap_inc_factors": [2.0, 2.0], "fmap_dec_factors": [2.0, 2.0],
           "downsample_factors": [[1, 2, 2], [1, 2, 2]], "train_input_shape": [1, 56, 56],
           "predict_input_shape": [1, 52, 52]}


def test_pipeline_from_raw(tmp_path, torch_one_thread):
    cfg = config_from_table({
        "data": {"normalization": "none"}, "model": TINY_2D,
        "prediction": {"device": "cpu"}, "training": {"use_amp": False},
        # a random network: loose foreground thresholds so that something is foreground
        "vote": {"block_shape": [1, 24, 24], "numinst_thresholds": [0.34, 0.9]},
    })
    torch.manual_seed(0)
    net = build_model(cfg.model, 1)
    for p in net.parameters():
        p.data.mul_(1.5)
    ckpt = save_checkpoint(tmp_path / "exp" / "train" / "checkpoint_1.pt", net, iteration=1)
    raw = np.random.default_rng(0).random((1, 1, 50, 70), dtype=np.float32)
    arr = prepare_array(f"{tmp_path}/raw.zarr/raw", shape=raw.shape, chunks=(1, 1, 25, 35), dtype="float32",
                        axes="czyx")
    arr[...] = raw
    res = run_pipeline(cfg, tmp_path / "exp", client=None, raw=f"{tmp_path}/raw.zarr/raw")
    assert res.ok and res.stages["predict"]["done"] > 1
    predict_volume(cfg, ckpt, f"{tmp_path}/raw.zarr/raw", tmp_path / "ref.zarr")
    for name in ("numinst", "patches"):
        np.testing.assert_array_equal(open_array(f"{res.prediction}/{name}")[...],
                                      open_array(f"{tmp_path}/ref.zarr/{name}")[...])
    ref = whole_volume(str(tmp_path / "ref.zarr"), assembly_settings(cfg))
    out = np.asarray(open_array(res.output)[...])
    assert (ref > 0).sum() > 20
    np.testing.assert_array_equal(out, ref)


def test_greedy_selection_and_both_inputs_are_refused(tmp_path):
    with pytest.raises(ConfigError, match="not block invariant; set \\[vote\\] blockwise = false"):
        config_from_table({"model": {"patch_shape": [1, 5, 5]}, "vote": {"selection": "greedy"}})
    # a config meant for one process is still refused by the blockwise pipeline itself
    cfg = config_from_table({"model": {"patch_shape": [1, 5, 5]},
                             "vote": {"selection": "greedy", "blockwise": False}})
    with pytest.raises(ConfigError, match="not block invariant"):
        run_pipeline(cfg, tmp_path, client=None, prediction="x.zarr")
    cfg = config_from_table({"model": {"patch_shape": [1, 5, 5]}})
    with pytest.raises(ConfigError, match="exactly one of raw"):
        run_pipeline(cfg, tmp_path, client=None, prediction="x.zarr", raw="y.zarr/raw")
