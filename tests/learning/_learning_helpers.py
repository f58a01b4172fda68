"""Helpers of the learning tests: tiny network configs, the slow-test switch."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from ppp_dist.config import config_from_table
from ppp_dist.config.sections import PipelineConfig

RUN_SLOW = os.environ.get("PPP_DIST_RUN_SLOW") == "1"
SCRIPTS = Path(__file__).resolve().parents[2] / "scripts"
slow = pytest.mark.skipif(not RUN_SLOW, reason="slow; set PPP_DIST_RUN_SLOW=1 to run")


TINY_2D = {"patch_shape": [1, 5, 5], "num_fmaps": 4, "fmap_inc_factors": [2.0, 2.0], "fmap_dec_factors": [2.0, 2.0],
           "downsample_factors": [[1, 2, 2], [1, 2, 2]], "train_input_shape": [1, 56, 56],
           "predict_input_shape": [1, 52, 52]}
TINY_3D = {"patch_shape": [3, 3, 3], "num_fmaps": 3, "fmap_inc_factors": [2.0], "fmap_dec_factors": [2.0],
           "downsample_factors": [[2, 2, 2]], "train_input_shape": [20, 20, 20], "predict_input_shape": [24, 24, 24]}


def make_config(sample: str | Path | None = None, model: dict | None = None, training: dict | None = None,
                data: dict | None = None, **sections) -> PipelineConfig:
    table = {
        "data": {"raw_key": "raw", "gt_key": "labels/gt_instances", "normalization": "none",
                 **({"train_data": [str(sample)]} if sample else {}), **(data or {})},
        "model": {**TINY_2D, **(model or {})},
        "training": {"batch_size": 2, "num_workers": 0, "log_every": 10, "validate_every": 0,
                     "checkpoint_every": 1000, "learning_rate": 3e-3, "use_amp": False, "device": "cpu",
                     "augmentation": {"probability_overlay": 0.0}, **(training or {})},
        "prediction": {"device": "cpu"},
        **sections,
    }
    return config_from_table(table)


def load_script(name: str):
    """The module of ``scripts/<name>.py`` (scripts are not a package)."""
    import importlib.util

    spec = importlib.util.spec_from_file_location(name, SCRIPTS / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module
