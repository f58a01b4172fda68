"""The task chain through the command line: train -> predict -> label -> postprocess -> evaluate.

Quality is tested elsewhere (tests/learning/test_overfit.py, tests/ops); this checks that the tasks hand
their outputs to each other through the experiment folder, resume it, and report in one line each.
"""

from __future__ import annotations

import numpy as np
import pytest

from ppp_dist.cli import main
from ppp_dist.data.writer import write_synthetic_volume
from ppp_dist.io import volumes

TINY = ["model.patch_shape=[1, 5, 5]", "model.numinst_head=\"foreground\"", "model.num_fmaps=4",
        "model.fmap_inc_factors=[2.0]", "model.fmap_dec_factors=[2.0]", "model.downsample_factors=[[1, 2, 2]]",
        "model.train_input_shape=[1, 44, 44]", "model.predict_input_shape=[1, 44, 44]",
        "training.max_iterations=6", "training.checkpoint_every=3", "training.batch_size=2",
        "training.num_workers=0", "training.validate_every=0", "training.log_every=3",
        "training.sampling.probability_foreground=0.9", "training.sampling.probability_overlap=0.0",
        "training.sampling.probability_random=0.1", "training.augmentation.probability_overlay=0.0",
        "data.raw_key=\"raw\"", "data.gt_key=\"labels/gt_instances\"", "data.normalization=\"none\"",
        "vote.block_shape=[1, 64, 64]", "evaluation.block_shape=[1, 32, 32]"]


pytestmark = pytest.mark.usefixtures("torch_one_thread")


@pytest.fixture(scope="module")
def sample(tmp_path_factory):
    path = tmp_path_factory.mktemp("data") / "nuclei.zarr"
    write_synthetic_volume(path, "nuclei2d", (60, 70), (30, 35), seed=3)
    return path


def test_chain_train_predict_label_postprocess_evaluate(tmp_path, sample, capsys):
    overrides = [arg for item in TINY + [f"data.train_data=[\"{sample}\"]"] for arg in ("--set", item)]
    code = main(["--do", "train", "predict", "label", "postprocess", "evaluate", "--root", str(tmp_path),
                 "--input", f"{sample}/raw", "--gt", f"{sample}/labels/gt_instances", *overrides])
    out, err = capsys.readouterr()
    assert code == 0, err
    (exp,) = tmp_path.iterdir()
    assert (exp / "train" / "checkpoint_6.pt").is_file()
    patches = volumes.open_array(f"{exp}/prediction.zarr/patches")
    assert patches.shape == (25, 1, 60, 70) and patches.dtype == np.uint8
    instances = volumes.open_array(f"{exp}/instances.zarr/instances")
    assert instances.shape[1:] == (1, 60, 70) and instances.dtype == np.uint32
    assert (exp / "postprocessed.zarr" / "instances").is_dir()
    assert (exp / "evaluation" / "results.json").is_file()
    for line in ("train: 6 iterations", "predict: ", "label: ", "postprocess: ", "evaluation: avS"):
        assert line in out, out
    # the same folder resumed: label alone reads the prediction the chain left there
    code = main(["label", "--exp", str(exp)])
    out, err = capsys.readouterr()
    assert code == 0, err
    assert f"{exp}/instances.zarr/instances" in out
    # train resumed with nothing left to do says so (it printed "final loss nan")
    code = main(["train", "--exp", str(exp)])
    out, err = capsys.readouterr()
    assert code == 0, err
    assert f"train: done already, 6 iterations (max_iterations 6), checkpoint {exp}/train/checkpoint_6.pt" in out
    assert "nan" not in out


def test_predict_label_chain_runs_on_the_workers_and_fused_stores_no_patches(tmp_path, sample, capsys):
    """`--do predict label` with [vote] blockwise is one pipeline on the cluster: predict on the workers
    (prediction.zarr written), or fused with store_patches = false (no patches); same instances."""
    overrides = [arg for item in TINY + [f"data.train_data=[\"{sample}\"]", "cluster.n_workers=1"]
                 for arg in ("--set", item)]
    assert main(["train", "--root", str(tmp_path / "t"), *overrides]) == 0
    (exp,) = (tmp_path / "t").iterdir()
    ckpt = f"prediction.checkpoint=\"{exp}/train/checkpoint_6.pt\""
    outs = {}
    for name, extra in (("stored", []), ("fused", ["prediction.store_patches=false"])):
        sets = overrides + [a for item in [ckpt, *extra] for a in ("--set", item)]
        capsys.readouterr()
        code = main(["--do", "predict", "label", "--root", str(tmp_path / name), "--input", f"{sample}/raw",
                     *sets])
        out, err = capsys.readouterr()
        assert code == 0, err
        (run,) = (tmp_path / name).iterdir()
        assert "(blockwise on the workers)" in out and "dask dashboard:" in out
        assert "vote: " in out and "paint: " in out
        assert (run / "prediction.zarr").exists() == (name == "stored"), out
        if name == "fused":
            assert "not stored: fused predict -> vote" in out and "predict: " in out
        outs[name] = np.asarray(volumes.open_array(f"{run}/instances.zarr/instances")[...])
    np.testing.assert_array_equal(outs["stored"], outs["fused"])


def test_label_without_prediction_is_one_sentence(tmp_path, capsys):
    code = main(["label", "--root", str(tmp_path)])
    err = capsys.readouterr().err
    assert code == 2
    assert err.strip().startswith("ppp-dist: error: label needs a prediction group (patches + numinst)")
    assert not list(tmp_path.iterdir())


def test_label_blockwise_on_the_cluster_equals_one_process(tmp_path, sample, capsys):
    """`ppp-dist label` runs vote -> agglomerate -> paint on a local dask cluster by default."""
    from ppp_dist.ops.patches import numinst_onehot, numinst_target, patch_targets

    gt = np.asarray(volumes.open_array(f"{sample}/labels/gt_instances")[...])
    store = tmp_path / "oracle.zarr"
    for name, data in (("patches", patch_targets(gt, (1, 5, 5)) * np.uint8(255)),
                       ("numinst", (numinst_onehot(numinst_target(gt)) * 255).astype(np.uint8))):
        volumes.prepare_array(f"{store}/{name}", shape=data.shape, chunks=data.shape, dtype="uint8")[...] = data
    common = ["label", "--input", str(store), "--set", "model.patch_shape=[1, 5, 5]",
              "--set", "vote.block_shape=[1, 32, 32]", "--set", "cluster.n_workers=2"]
    assert main([*common, "--root", str(tmp_path / "blockwise")]) == 0
    out = capsys.readouterr().out
    assert "dask dashboard: http://" in out and "vote: 6 blocks | done 6 | failed 0" in out
    assert main([*common, "--root", str(tmp_path / "whole"), "--set", "vote.blockwise=false"]) == 0
    capsys.readouterr()
    (blockwise,), (whole,) = (tmp_path / "blockwise").iterdir(), (tmp_path / "whole").iterdir()
    a = np.asarray(volumes.open_array(f"{blockwise}/instances.zarr/instances")[...])
    b = np.asarray(volumes.open_array(f"{whole}/instances.zarr/instances")[...])
    assert a.max() >= 3 and a.tobytes() == b.tobytes()
