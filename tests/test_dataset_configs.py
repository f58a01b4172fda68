"""The dataset configs in configs/: they load, their networks fit, plan runs, and they say what they reproduce."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from ppp_dist.cli import main
from ppp_dist.config import load_config
from ppp_dist.io import volumes
from ppp_dist.learning.network_shapes import unet_output_shape

CONFIGS = Path(__file__).resolve().parents[1] / "configs"
DATASETS = ["flylight", "bbbc010_ppp", "bbbc010_pppdec", "dsb2018_ppp", "dsb2018_pppdec", "nuclei3d",
            "isbi2012", "demo_synthetic_3d"]


def _config(name: str):
    return load_config([CONFIGS / f"{name}.toml"])


def _header(name: str) -> str:
    lines = (CONFIGS / f"{name}.toml").read_text().splitlines()
    return "\n".join(line for line in lines[:next(i for i, text in enumerate(lines) if not text.startswith("#"))])


@pytest.mark.parametrize("name", DATASETS)
def test_config_loads_and_network_inputs_fit(name):
    model = _config(name).model
    for shape in (model.train_input_shape, model.predict_input_shape):
        out = unet_output_shape(shape, model.downsample_factors, model.kernel_size, model.num_repetitions,
                                model.padding)
        assert all(o > 0 for o in out)
    if model.patch_shape[0] == 1:  # 2D: z never downsampled, one slice in and out
        assert model.train_input_shape[0] == model.predict_input_shape[0] == 1
        assert all(f[0] == 1 for f in model.downsample_factors)


@pytest.mark.parametrize("name", DATASETS)
def test_header_names_the_setup_data_and_conversion(name):
    header = _header(name)
    assert len(header.splitlines()) >= 5
    assert "convert_to_zarr.py" in header or "make_synthetic_volume.py" in header
    assert ("reproduces" in header) != ("OURS" in header)  # a paper setup, or says that it is ours


@pytest.mark.parametrize("name", DATASETS)
def test_plan_runs_on_a_one_block_volume(name, tmp_path, capsys):
    config = _config(name)
    spatial = tuple(max(b, 1) for b in config.vote.block_shape)
    path = f"{tmp_path / 'in.zarr'}/{config.data.raw_key}"
    volumes.prepare_array(path, shape=(config.data.num_channels,) + spatial,
                          chunks=(config.data.num_channels,) + spatial, dtype="uint8", axes="czyx")
    code = main(["plan", "--config", str(CONFIGS / f"{name}.toml"), "--input", path])
    out = capsys.readouterr().out
    assert code == 0, out
    stages = [line.split()[0] for line in out.splitlines() if line.split()[:1] in (["predict"], ["vote"],
                                                                                   ["paint"])]
    assert stages == ["predict", "vote", "paint"]
    assert "nothing was written" in out


@pytest.mark.parametrize("name", ["bbbc010_pppdec", "dsb2018_pppdec"])
def test_decoder_reaches_the_patch_size(name):
    model = _config(name).model
    assert model.head == "codes" and int(np.prod(model.decoder.code_shape)) == model.code_units
    levels = len(model.decoder.num_fmaps)
    for axis, patch in enumerate(model.patch_shape):
        code = model.decoder.code_shape[1 + axis]
        grown = code if patch == 1 else code * model.decoder.upsample_factor ** levels
        assert grown >= patch and (patch > 1 or code == 1)


# the paper's settings, per config (ppp_reference.md §1.1, §4, §6; the setups' config.toml files)
EXPECTED = {
    "flylight": {"data.num_channels": 3, "data.overlapping_instances": True, "model.patch_shape": (7, 7, 7),
                 "evaluation.criterion": "cldice", "evaluation.min_instance_size": 500,
                 "evaluation.average_over_samples": False, "vote.block_shape": (92, 92, 92),
                 "vote.partition": "mutex_watershed", "validation.metric": "S"},
    "bbbc010_ppp": {"data.num_channels": 2, "data.overlapping_instances": True, "model.num_fmaps": 12,
                    "model.patch_shape": (1, 41, 41), "model.fmap_dec_factors": (0.8, 1.0, 2.0),
                    "model.upsampling": "resize_conv", "vote.patch_threshold": 0.9},
    "bbbc010_pppdec": {"data.num_channels": 1, "data.overlapping_instances": True, "model.code_units": 252,
                       "model.decoder.code_shape": (7, 1, 6, 6), "model.num_fmaps": 40},
    "dsb2018_ppp": {"model.patch_shape": (1, 25, 25), "model.train_input_shape": (1, 268, 268),
                    "model.predict_input_shape": (1, 460, 460), "vote.cover_threshold": 0.9,
                    "vote.different_rule": "inverse_threshold", "validation.metric": "S_0.5"},
    "dsb2018_pppdec": {"model.code_units": 256, "model.decoder.code_shape": (16, 1, 4, 4),
                       "model.fmap_dec_factors": (1.3, 1.3, 1.3, 1.3), "vote.patch_threshold": 0.6},
    "nuclei3d": {"model.patch_shape": (9, 9, 9), "model.predict_input_shape": (236, 236, 124),
                 "evaluation.min_instance_size": 511, "vote.patch_threshold": 0.5,
                 "vote.different_rule": "inverse_threshold", "validation.checkpoints": (60000, 100000)},
    "isbi2012": {"evaluation.isbi_scores": True, "model.patch_shape": (1, 25, 25)},
    "demo_synthetic_3d": {"data.raw_key": "raw", "data.gt_key": "labels/gt_instances",
                          "data.num_channels": 3},
}


@pytest.mark.parametrize("name", DATASETS)
def test_paper_settings(name):
    config = _config(name)
    for dotted, expected in EXPECTED[name].items():
        value = config
        for part in dotted.split("."):
            value = getattr(value, part)
        assert value == expected, dotted
    if config.evaluation.criterion == "iou":  # avS needs S_t at 0.5 ... 0.9
        assert {0.5, 0.6, 0.7, 0.8, 0.9} <= set(config.evaluation.thresholds)


def test_validation_grids_reproduce_the_sweeps():
    dsb = _config("dsb2018_ppp").validation
    assert dsb.grid["patch_threshold"] == dsb.grid["cover_threshold"] == (0.95, 0.98, 0.99, 0.9)
    assert set(dsb.zip_keys) == {"patch_threshold", "cover_threshold"}
    assert set(dsb.grid["partition"]) == {"mutex_watershed", "connected_components"}
    fly = _config("flylight").validation
    assert fly.grid["partition"] == ("connected_components",) and fly.checkpoints == (100000,)
    assert [tuple(t) for t in fly.grid["numinst_thresholds"]] == [(0.9, 0.1)]
