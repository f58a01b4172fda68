"""validate (checkpoints x assembly parameters), cross_validate (two folds, pooled) and visualize."""

from __future__ import annotations

import json

import pytest
from test_pipeline_cli import TINY  # the tiny 2D network and training settings

from ppp_dist.cli import main
from ppp_dist.config import load_config
from ppp_dist.data.writer import write_synthetic_volume
from ppp_dist.tasks.validate import parameter_sets, set_name

pytestmark = pytest.mark.usefixtures("torch_one_thread")


def test_parameter_sets_are_zip_times_product():
    config = load_config([], ["validation.grid.patch_threshold=[0.5, 0.6]",
                              "validation.grid.cover_threshold=[0.5, 0.7]",
                              "validation.grid.partition=['connected_components', 'mutex_watershed']",
                              "validation.zip_keys=['patch_threshold', 'cover_threshold']"])
    sets = parameter_sets(config)
    assert len(sets) == 4  # 2 zipped rows x 2 partitions
    assert sets[0] == {"patch_threshold": 0.5, "cover_threshold": 0.5, "partition": "connected_components"}
    assert sets[3] == {"patch_threshold": 0.6, "cover_threshold": 0.7, "partition": "mutex_watershed"}
    assert set_name(sets[1]) == "patch_threshold=0.5,cover_threshold=0.5,partition=mutex_watershed"
    assert parameter_sets(load_config()) == [{}]


@pytest.fixture(scope="module")
def folds(tmp_path_factory):
    root = tmp_path_factory.mktemp("folds")
    paths = []
    for seed in (3, 4):
        path = root / f"nuclei_{seed}.zarr"
        write_synthetic_volume(path, "nuclei2d", (60, 70), (30, 35), seed=seed)
        paths.append(path)
    return paths


def _settings(folds):
    extra = [f'data.train_data=["{folds[0]}"]', f'data.val_data=["{folds[0]}"]', f'data.test_data=["{folds[1]}"]',
             "validation.grid.patch_threshold=[0.5, 0.7]", "validation.grid.edge_threshold=[0.0, 0.3]",
             "validation.metric=S_0.5", "training.max_iterations=60", "training.checkpoint_every=30"]
    return [arg for item in TINY + extra for arg in ("--set", item)]


def test_validate_then_infer_with_the_best(tmp_path, folds, capsys):
    settings = _settings(folds)
    assert main(["train", "--root", str(tmp_path), *settings]) == 0
    (exp,) = tmp_path.iterdir()
    capsys.readouterr()
    assert main(["validate", "--exp", str(exp)]) == 0
    out = capsys.readouterr().out
    results = json.loads((exp / "val" / "results.json").read_text())
    assert [r["checkpoint"] for r in results["results"]] == [30] * 4 + [60] * 4  # checkpoints x 4 sets
    best = max(results["results"], key=lambda r: r["S_0.5"])
    assert results["best"] == best == json.loads((exp / "val" / "best.json").read_text())
    assert f"best S_0.5 {best['S_0.5']:.4f} at checkpoint {best['checkpoint']}" in out
    # infer with the best checkpoint labels with the validated parameters (folders are reused)
    code = main(["--do", "predict", "label", "--exp", str(exp), "--input", f"{folds[1]}/raw",
                 "--set", "prediction.checkpoint=best"])
    assert code == 0, capsys.readouterr().err
    assert (exp / "instances.zarr" / "instances").is_dir()


def test_cross_validate_pools_both_folds(tmp_path, folds, capsys):
    settings = _settings(folds) + ["--set", "validation.checkpoints=[60]",
                                   "--set", "evaluation.average_over_samples=false"]
    assert main(["--do", "train", "cross_validate", "--root", str(tmp_path), *settings]) == 0
    (exp,) = tmp_path.iterdir()
    summary = json.loads((exp / "cv" / "cross_validate.json").read_text())
    assert [c["chosen_on"] for c in summary["chosen"]] == ["val_data", "test_data"]
    assert summary["pooled"]["n_images"] == 2  # one sample per fold, each scored with the other's setup
    assert 0.0 <= summary["pooled"]["S_0.5"] <= 1.0
    assert "cross_validate: pooled S_0.5" in capsys.readouterr().out


def test_visualize_writes_pictures(tmp_path, folds, capsys):
    """On an oracle prediction (ground truth made into patches), so the pictures have content."""
    import numpy as np

    from ppp_dist.io import volumes
    from ppp_dist.ops.patches import numinst_onehot, numinst_target, patch_targets

    gt = np.asarray(volumes.open_array(f"{folds[0]}/labels/gt_instances")[...])
    store = tmp_path / "oracle.zarr"
    for name, data in (("patches", patch_targets(gt, (1, 5, 5)) * np.uint8(255)),
                       ("numinst", (numinst_onehot(numinst_target(gt)) * 255).astype(np.uint8))):
        volumes.prepare_array(f"{store}/{name}", shape=data.shape, chunks=data.shape, dtype="uint8")[...] = data
    code = main(["--do", "label", "visualize", "--root", str(tmp_path / "runs"), "--input", str(store),
                 "--gt", f"{folds[0]}/labels/gt_instances", "--set", "model.patch_shape=[1, 5, 5]"])
    assert code == 0, capsys.readouterr().err
    (exp,) = (tmp_path / "runs").iterdir()
    for name in ("patches.png", "mip_foreground.png", "mip_instances.png"):
        assert (exp / "visualize" / name).stat().st_size > 1000, name


def test_the_grid_sweeps_the_foreground_threshold_and_min_instance_size():
    from ppp_dist.config import with_vote
    from ppp_dist.errors import ConfigError

    config = load_config([], ["validation.grid.foreground_threshold=[0.4, 0.6]",
                              "validation.grid.min_instance_size=[0, 50]"])
    sets = parameter_sets(config)
    assert sets == [{"foreground_threshold": t, "min_instance_size": s} for t in (0.4, 0.6) for s in (0, 50)]
    chosen = with_vote(config, sets[3])
    assert chosen.vote.foreground_threshold == 0.6 and chosen.postprocess.min_instance_size == 50
    with pytest.raises(ConfigError, match="min_instance_size and dilate must be >= 0, got -1"):
        with_vote(config, {"min_instance_size": -1})
    with pytest.raises(ConfigError, match="'min_instance_sise' is not a \\[vote\\] key \\(did you mean "
                                          "'min_instance_size'\\?\\); the grid takes \\[vote\\] keys and "
                                          "min_instance_size"):
        load_config([], ["validation.grid.min_instance_sise=[0, 50]"])


def test_the_foreground_threshold_decides_the_foreground_of_a_foreground_head():
    import numpy as np

    from ppp_dist.ops.consensus import numinst_from_prob

    prob = np.array([0.2, 0.45, 0.55, 0.8], np.float32).reshape(1, 1, 1, 4)
    assert numinst_from_prob(prob).tolist() == [[[0, 0, 1, 1]]]
    assert numinst_from_prob(prob, foreground_threshold=0.3).tolist() == [[[0, 1, 1, 1]]]
    assert numinst_from_prob(prob, foreground_threshold=0.7).tolist() == [[[0, 0, 0, 1]]]
