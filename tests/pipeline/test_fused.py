"""Fused mode: patches computed inside the vote/paint blocks (nothing stored) give the same bytes as the
stored-prediction pipeline and the whole-volume assembly — for oracle labels, a patch network, and a
ppp+dec code network (predict -> decode -> vote)."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from _pipeline_helpers import whole_volume, write_oracle

from ppp_dist.config import config_from_table
from ppp_dist.data import synthetic
from ppp_dist.geometry import Box
from ppp_dist.io.volumes import list_arrays, open_array, prepare_array
from ppp_dist.learning.decode import decode_volume
from ppp_dist.learning.model import build_model, save_checkpoint
from ppp_dist.pipeline.infer import run_pipeline
from ppp_dist.pipeline.predict import predict_volume
from ppp_dist.pipeline.settings import AssemblySettings, assembly_settings
from ppp_dist.pipeline.sources import OraclePatches, StoredPrediction

TINY_2D = {"patch_shape": [1, 5, 5], "num_fmaps": 4, "fmap_inc_factors": [2.0, 2.0], "fmap_dec_factors": [2.0, 2.0],
           "downsample_factors": [[1, 2, 2], [1, 2, 2]], "train_input_shape": [1, 56, 56],
           "predict_input_shape": [1, 52, 52]}
CODES = {**TINY_2D, "head": "codes", "code_units": 8, "decoder": {"code_shape": [2, 1, 2, 2], "num_fmaps": [4, 2]}}


def _labels(tmp_path, instances):
    arr = prepare_array(f"{tmp_path}/gt.zarr/labels", shape=instances.shape, chunks=(instances.shape[0], 9, 10, 11),
                        dtype="uint16", axes="czyx", kind="labels")
    arr[...] = instances
    return f"{tmp_path}/gt.zarr/labels"


def test_oracle_source_reads_what_the_stored_oracle_holds(tmp_path):
    inst = synthetic.crossing_tubes_3d((36, 36, 36), n_tubes=3, seed=1).instances
    settings = AssemblySettings((5, 5, 5))
    stored = StoredPrediction(*(f"{write_oracle(tmp_path / 'o.zarr', inst, (5, 5, 5), (10, 10, 10))}/{n}"
                                for n in ("patches", "numinst")))
    oracle = OraclePatches(_labels(tmp_path, inst))
    assert oracle.volume_shape(settings) == stored.volume_shape(settings) == (36, 36, 36)
    for box in (Box((0, 0, 0), (36, 36, 36)), Box((3, 0, 17), (19, 12, 36)), Box((34, 35, 0), (36, 36, 1))):
        p1, n1 = oracle.read(box, settings)  # SparsePatches: rows computed per voxel on demand
        p2, n2 = stored.read(box, settings)
        assert p1.dtype == p2.dtype == np.uint8 and p1.shape == p2.shape
        every = np.argwhere(np.ones(box.shape, bool))  # the rows of every voxel, not only the foreground's
        np.testing.assert_array_equal(p1.rows(every), p2[:, every[:, 0], every[:, 1], every[:, 2]].T)
        np.testing.assert_array_equal(n1, n2)


@pytest.mark.parametrize("block", [(12, 12, 12), (17, 9, 36)])
def test_fused_oracle_equals_the_stored_oracle_pipeline(tmp_path, block):
    inst = synthetic.crossing_tubes_3d((36, 36, 36), n_tubes=3, seed=1).instances
    cfg = config_from_table({"model": {"patch_shape": [5, 5, 5]}, "vote": {"block_shape": list(block)}})
    group = write_oracle(tmp_path / "o.zarr", inst, (5, 5, 5), block)
    ref = whole_volume(group, assembly_settings(cfg))
    res = run_pipeline(cfg, tmp_path / "exp", client=None, labels=_labels(tmp_path, inst))
    assert res.ok and res.prediction is None
    assert res.stages["vote"]["done"] == len(list(range(0, 36, block[0]))) * len(list(range(0, 36, block[1]))) \
        * len(list(range(0, 36, block[2])))
    out = np.asarray(open_array(res.output)[...])
    assert len(np.unique(ref)) > 3
    np.testing.assert_array_equal(out, ref)
    assert "prediction.zarr" not in {p.name for p in (tmp_path / "exp").iterdir()}


def _raw(tmp_path, shape=(1, 1, 50, 70)):
    raw = np.random.default_rng(0).random(shape, dtype=np.float32)
    arr = prepare_array(f"{tmp_path}/raw.zarr/raw", shape=raw.shape, chunks=(1, 1, 25, 35), dtype="float32",
                        axes="czyx")
    arr[...] = raw
    return f"{tmp_path}/raw.zarr/raw"


def _random_network(cfg, path):
    torch.manual_seed(0)
    net = build_model(cfg.model, 1)
    for p in net.parameters():
        p.data.mul_(1.5)
    if net.decoder is not None:  # a decoder that says "same" more often than not, so instances appear
        bias = [p for p in net.decoder.parameters() if p.ndim == 1][-1]
        bias.data.add_(0.5)
    return save_checkpoint(path, net, iteration=1)


@pytest.mark.parametrize("block", [[1, 24, 24], [1, 17, 31]])
def test_fused_network_equals_predict_then_label(tmp_path, torch_one_thread, block):
    cfg = config_from_table({
        "data": {"normalization": "none"}, "model": TINY_2D,
        "prediction": {"device": "cpu", "store_patches": False}, "training": {"use_amp": False},
        "vote": {"block_shape": block, "numinst_thresholds": [0.34, 0.9]},
    })
    ckpt = _random_network(cfg, tmp_path / "exp" / "train" / "checkpoint_1.pt")
    raw = _raw(tmp_path)
    res = run_pipeline(cfg, tmp_path / "exp", client=None, raw=raw)
    assert res.ok and "predict" not in res.stages and res.prediction is None
    assert not (tmp_path / "exp" / "prediction.zarr").exists()
    predict_volume(cfg, ckpt, raw, tmp_path / "ref.zarr")
    ref = whole_volume(str(tmp_path / "ref.zarr"), assembly_settings(cfg))
    assert (ref > 0).sum() > 20
    np.testing.assert_array_equal(np.asarray(open_array(res.output)[...]), ref)


def test_fused_ppp_dec_equals_predict_decode_label(tmp_path, torch_one_thread):
    cfg = config_from_table({
        "data": {"normalization": "none"}, "model": CODES,
        "prediction": {"device": "cpu", "store_patches": False, "decode_foreground_threshold": 0.3},
        "training": {"use_amp": False},
        "vote": {"block_shape": [1, 24, 24], "numinst_thresholds": [0.1, 0.9]},
    })
    ckpt = _random_network(cfg, tmp_path / "exp" / "train" / "checkpoint_1.pt")
    raw = _raw(tmp_path)
    res = run_pipeline(cfg, tmp_path / "exp", client=None, raw=raw)
    assert res.ok
    predict_volume(cfg, ckpt, raw, tmp_path / "ref.zarr")
    decode_volume(cfg, ckpt, tmp_path / "ref.zarr")
    assert {"codes", "patches", "numinst"} <= set(list_arrays(tmp_path / "ref.zarr"))
    ref = whole_volume(str(tmp_path / "ref.zarr"), assembly_settings(cfg))
    assert (ref > 0).sum() > 20
    np.testing.assert_array_equal(np.asarray(open_array(res.output)[...]), ref)
    # the stored ppp+dec pipeline without decode is refused with the way out named
    cfg_stored = config_from_table({"data": {"normalization": "none"}, "model": CODES,
                                    "prediction": {"device": "cpu"}, "training": {"use_amp": False},
                                    "vote": {"block_shape": [1, 24, 24]}})
    from ppp_dist.errors import ConfigError
    with pytest.raises(ConfigError, match="store_patches = false"):
        run_pipeline(cfg_stored, tmp_path / "exp2", client=None, raw=raw, checkpoint=ckpt)


def test_vote_keys_reach_the_blockwise_and_the_one_process_label(tmp_path):
    """[vote] refine_consensus / overlap_votes change the result, and both label paths apply them."""
    from ppp_dist.tasks.label import label_volume

    inst = synthetic.crossing_tubes_3d((36, 36, 36), n_tubes=3, seed=1).instances
    group = write_oracle(tmp_path / "o.zarr", inst, (5, 5, 5), (12, 12, 12))
    noisy = np.asarray(open_array(f"{group}/patches")[...])
    flip = np.random.default_rng(0).random(noisy.shape) < 0.05
    noisy = np.where(flip, 255 - noisy, noisy).astype(np.uint8)
    open_array(f"{group}/patches", "r+")[...] = noisy
    outs = {}
    for name, vote in (("default", {}), ("plain", {"refine_consensus": False, "overlap_votes": "ignore"})):
        cfg = config_from_table({"model": {"patch_shape": [5, 5, 5]},
                                 "vote": {"block_shape": [12, 12, 12], **vote}})
        settings = assembly_settings(cfg)
        assert settings.refine_consensus == vote.get("refine_consensus", True)
        ref = whole_volume(group, settings)
        res = run_pipeline(cfg, tmp_path / f"exp_{name}", client=None, prediction=group)
        np.testing.assert_array_equal(np.asarray(open_array(res.output)[...]), ref)
        label_volume(cfg, group, tmp_path / f"one_{name}.zarr")
        np.testing.assert_array_equal(np.asarray(open_array(f"{tmp_path}/one_{name}.zarr/instances")[...]), ref)
        outs[name] = ref
    assert not np.array_equal(outs["default"], outs["plain"])
