"""The training loop: the loss falls, checkpoints resume exactly, metrics and network.json are written."""

from __future__ import annotations

import csv
import json

import pytest
import torch
from _learning_helpers import TINY_3D, make_config

from ppp_dist.errors import CheckpointError
from ppp_dist.experiment import ExperimentPaths
from ppp_dist.learning.model import read_checkpoint
from ppp_dist.learning.train import COSINE_FLOOR, learning_rate_at, run_train


def _metrics(exp):
    with open(exp / "train" / "metrics.csv") as f:
        return list(csv.DictReader(f))


def test_loss_halves_within_200_iterations(nuclei_sample, tmp_path):
    config = make_config(nuclei_sample, model={"num_fmaps": 8}, training={"log_every": 20, "checkpoint_every": 100})
    summary = run_train(config, tmp_path / "exp", max_iterations=200)
    rows = [r for r in _metrics(tmp_path / "exp") if r["loss"]]
    first, last = float(rows[0]["loss"]), float(rows[-1]["loss"])
    assert summary["iterations"] == 200 and summary["iterations_run"] == 200
    assert last <= 0.5 * first, f"loss {first:.3f} -> {last:.3f}"
    assert float(rows[-1]["patch_loss"]) < float(rows[0]["patch_loss"])
    assert list(ExperimentPaths(tmp_path / "exp").checkpoints()) == [100, 200]
    assert summary["checkpoint"].endswith("checkpoint_200.pt") and summary["it_per_s"] > 0
    network = json.loads((tmp_path / "exp" / "train" / "network.json").read_text())
    assert network["train"] == {"input": [1, 56, 56], "output": [1, 16, 16], "context": [0, 20, 20]}


def test_resumed_training_equals_uninterrupted_training(nuclei_sample, tmp_path):
    config = make_config(nuclei_sample, training={"checkpoint_every": 6, "log_every": 3, "validate_every": 6},
                         data={"val_data": [str(nuclei_sample)]},
                         **{"general": {"seed": 5}})
    run_train(config, tmp_path / "once", max_iterations=12)
    run_train(config, tmp_path / "twice", max_iterations=6)
    resumed = run_train(config, tmp_path / "twice", max_iterations=12)
    assert resumed["iterations_run"] == 6
    a = read_checkpoint(tmp_path / "once" / "train" / "checkpoint_12.pt")
    b = read_checkpoint(tmp_path / "twice" / "train" / "checkpoint_12.pt")
    for key, value in a["model_state_dict"].items():
        torch.testing.assert_close(b["model_state_dict"][key], value, rtol=0, atol=1e-6)
    for s1, s2 in zip(a["optimizer_state_dict"]["state"].values(), b["optimizer_state_dict"]["state"].values()):
        torch.testing.assert_close(s1["exp_avg"], s2["exp_avg"], rtol=0, atol=1e-6)
        assert float(s1["step"]) == float(s2["step"]) == 12
    # finished: a further call does no work
    assert run_train(config, tmp_path / "twice", max_iterations=12)["iterations_run"] == 0
    rows = _metrics(tmp_path / "twice")
    assert [int(r["iteration"]) for r in rows] == [3, 6, 9, 12]
    assert [bool(r["val_loss"]) for r in rows] == [False, True, False, True]


def test_cosine_schedule_runs_from_the_learning_rate_to_its_floor(nuclei_sample):
    config = make_config(nuclei_sample, training={"learning_rate": 1e-3, "max_iterations": 100,
                                                  "learning_rate_schedule": "cosine"})
    rates = [learning_rate_at(config, i) for i in range(101)]
    assert rates[0] == pytest.approx(1e-3) and rates[50] == pytest.approx(1e-3 * (1 + COSINE_FLOOR) / 2)
    assert rates[100] == pytest.approx(1e-3 * COSINE_FLOOR) and learning_rate_at(config, 150) == rates[100]
    assert all(a > b for a, b in zip(rates, rates[1:]))
    constant = make_config(nuclei_sample, training={"learning_rate": 1e-3, "max_iterations": 100})
    assert {learning_rate_at(constant, i) for i in (0, 50, 100)} == {1e-3}


def test_a_resumed_cosine_run_continues_the_schedule(nuclei_sample, tmp_path):
    config = make_config(nuclei_sample, training={"checkpoint_every": 6, "log_every": 3, "max_iterations": 12,
                                                  "learning_rate": 1e-3, "learning_rate_schedule": "cosine"},
                         **{"general": {"seed": 5}})
    run_train(config, tmp_path / "once")
    run_train(config, tmp_path / "twice", max_iterations=6)
    assert run_train(config, tmp_path / "twice")["iterations_run"] == 6
    a = read_checkpoint(tmp_path / "once" / "train" / "checkpoint_12.pt")
    b = read_checkpoint(tmp_path / "twice" / "train" / "checkpoint_12.pt")
    for key, value in a["model_state_dict"].items():
        torch.testing.assert_close(b["model_state_dict"][key], value, rtol=0, atol=1e-6)
    logged = [float(r["learning_rate"]) for r in _metrics(tmp_path / "twice")]
    # each row logs the rate of its window's last step (after iteration - 1 steps)
    assert logged == pytest.approx([learning_rate_at(config, i - 1) for i in (3, 6, 9, 12)])
    assert logged == pytest.approx([float(r["learning_rate"]) for r in _metrics(tmp_path / "once")])


def test_resuming_with_another_architecture_is_refused(nuclei_sample, tmp_path):
    run_train(make_config(nuclei_sample), tmp_path / "exp", max_iterations=2)
    wider = make_config(nuclei_sample, model={"num_fmaps": 6})
    with pytest.raises(CheckpointError, match="num_fmaps is 4 in the checkpoint but 6 in the config"):
        run_train(wider, tmp_path / "exp", max_iterations=4)


def test_three_dimensional_overlapping_data_with_workers(tubes_sample, tmp_path):
    config = make_config(tubes_sample, model=TINY_3D, data={"num_channels": 3},
                         training={"num_workers": 1, "augmentation": {"probability_overlay": 0.5}})
    summary = run_train(config, tmp_path / "exp", max_iterations=4)
    assert summary["iterations"] == 4
    assert summary["shapes"]["train"]["output"] == [4, 4, 4]
