"""What a user has: `infer --checkpoint FILE --input image.tif|png` (2D or 3D, no config, no ground truth),
`train --init FILE`, and blockwise prediction normalised with the checkpoint's numbers."""

from __future__ import annotations

import numpy as np
import pytest
import tifffile
import tomli_w
import torch

from ppp_dist.cli import main
from ppp_dist.config import config_from_table
from ppp_dist.config.loader import config_to_table
from ppp_dist.io.volumes import open_array, prepare_array
from ppp_dist.learning.model import build_model, read_checkpoint, save_checkpoint
from ppp_dist.learning.normalize import settings_of
from ppp_dist.pipeline.infer import run_pipeline
from ppp_dist.pipeline.predict import predict_volume

TINY_2D = {"patch_shape": [1, 5, 5], "num_fmaps": 4, "fmap_inc_factors": [2.0, 2.0], "fmap_dec_factors": [2.0, 2.0],
           "downsample_factors": [[1, 2, 2], [1, 2, 2]], "train_input_shape": [1, 56, 56],
           "predict_input_shape": [1, 52, 52], "numinst_head": "foreground"}
TINY_3D = {"patch_shape": [3, 3, 3], "num_fmaps": 3, "fmap_inc_factors": [2.0], "fmap_dec_factors": [2.0],
           "downsample_factors": [[2, 2, 2]], "train_input_shape": [20, 20, 20], "predict_input_shape": [24, 24, 24],
           "numinst_head": "foreground"}


pytestmark = pytest.mark.usefixtures("torch_one_thread")


def shipped_like_checkpoint(path, model: dict) -> tuple:
    """A checkpoint as a shipped model is: weights, its config (percentile normalisation, a foreground
    threshold that a random network passes) and the normalisation settings."""
    cfg = config_from_table({"data": {"normalization": "percentile"}, "model": model,
                             "vote": {"foreground_threshold": 0.3, "blockwise": False},
                             "prediction": {"device": "cpu"}, "training": {"use_amp": False, "device": "cpu"}})
    torch.manual_seed(0)
    net = build_model(cfg.model, 1)
    for p in net.parameters():
        p.data.mul_(1.5)
    save_checkpoint(path, net, iteration=7, config_toml=tomli_w.dumps(config_to_table(cfg)),
                    normalization=settings_of(cfg.data))
    return cfg, path


def camera_image(shape) -> np.ndarray:
    """uint16 blobs on a large offset, as a fluorescence camera records them."""
    rng = np.random.default_rng(0)
    image = np.full(shape, 33_000, np.uint16)
    for _ in range(6):
        centre = [rng.integers(6, s - 6) for s in shape]
        grid = np.ogrid[tuple(slice(0, s) for s in shape)]
        inside = sum((g - c) ** 2 for g, c in zip(grid, centre)) < 16
        image[inside] = 36_000
    return image + rng.integers(0, 200, shape).astype(np.uint16)


def run(capsys, *argv):
    code = main(list(argv))
    out, err = capsys.readouterr()
    return code, out, err


@pytest.mark.parametrize("suffix,shape,model", [(".tif", (48, 64), TINY_2D), (".png", (48, 64), TINY_2D),
                                                 (".tif", (16, 30, 34), TINY_3D)])
def test_infer_runs_a_checkpoint_on_an_image_without_config_or_ground_truth(tmp_path, capsys, suffix, shape, model):
    _, ckpt = shipped_like_checkpoint(tmp_path / "model.pt", model)
    image = camera_image(shape)
    path = tmp_path / f"image{suffix}"
    if suffix == ".png":
        import imageio.v3 as iio

        iio.imwrite(path, image)
    else:
        tifffile.imwrite(path, image)
    code, out, err = run(capsys, "infer", "--checkpoint", str(ckpt), "--input", str(path), "--root",
                         str(tmp_path / "runs"))
    assert code == 0, err
    (exp,) = (tmp_path / "runs").iterdir()
    raw = open_array(f"{exp}/input.zarr/volumes/raw")
    assert raw.shape[-len(shape):] == shape and raw.dtype == np.uint16
    np.testing.assert_array_equal(np.asarray(raw[...]).reshape(shape), image)  # the image as converted
    labels = open_array(f"{exp}/instances.zarr/instances")[...]
    assert labels.shape[-len(shape):] == shape and "label:" in out and "evaluation" not in out
    saved = (exp / "config.toml").read_text()
    assert 'normalization = "percentile"' in saved and "foreground_threshold = 0.3" in saved  # from the checkpoint


def test_infer_with_bad_user_inputs_is_one_sentence_and_writes_nothing(tmp_path, capsys):
    _, ckpt = shipped_like_checkpoint(tmp_path / "model.pt", TINY_2D)
    (tmp_path / "image.bmp").write_bytes(b"BM")
    code, _, err = run(capsys, "infer", "--checkpoint", str(ckpt), "--input", str(tmp_path / "missing.tif"),
                       "--root", str(tmp_path / "runs"))
    assert code == 2 and "does not exist" in err and err.count("\n") == 1
    code, _, err = run(capsys, "infer", "--checkpoint", str(tmp_path / "none.pt"), "--input",
                       str(tmp_path / "image.bmp"), "--root", str(tmp_path / "runs"))
    assert code == 2 and "--checkpoint" in err and "does not exist" in err
    assert not (tmp_path / "runs").exists()


def test_train_init_starts_from_the_checkpoint_weights(tmp_path, capsys, nuclei_like_sample):
    _, ckpt = shipped_like_checkpoint(tmp_path / "model.pt", TINY_2D)
    code, _, err = run(capsys, "train", "--init", str(ckpt), "--root", str(tmp_path / "runs"),
                       "--set", f"data.train_data=['{nuclei_like_sample}']", "--set", 'data.raw_key="raw"',
                       "--set", 'data.gt_key="gt"', "--set", "training.max_iterations=1",
                       "--set", "training.learning_rate=1e-12", "--set", "training.num_workers=0",
                       "--set", 'training.device="cpu"', "--set", "training.use_amp=false")
    assert code == 0, err
    (exp,) = (tmp_path / "runs").iterdir()
    before = read_checkpoint(ckpt)["model_state_dict"]
    after = read_checkpoint(exp / "train" / "checkpoint_1.pt")["model_state_dict"]
    for key in before:
        np.testing.assert_allclose(after[key].numpy(), before[key].numpy(), atol=1e-6)


@pytest.fixture
def nuclei_like_sample(tmp_path):
    image = camera_image((64, 64))
    path = tmp_path / "sample.zarr"
    prepare_array(f"{path}/raw", shape=(1, 64, 64), chunks=(1, 64, 64), dtype="uint16")[...] = image[None]
    gt = (image > 34_000).astype(np.uint16)[None]
    prepare_array(f"{path}/gt", shape=(1, 64, 64), chunks=(1, 64, 64), dtype="uint16")[...] = gt
    return path


def test_blockwise_prediction_normalises_with_the_same_numbers_as_whole_volume(tmp_path):
    cfg, ckpt = shipped_like_checkpoint(tmp_path / "exp" / "train" / "checkpoint_7.pt", TINY_2D)
    # the config says dtype; both paths must normalise as the checkpoint was trained (percentile)
    cfg = config_from_table({**config_to_table(cfg), "data": {"normalization": "dtype"},
                             "vote": {"block_shape": [1, 24, 24], "foreground_threshold": 0.3}})
    image = camera_image((50, 70))[None, None]
    prepare_array(f"{tmp_path}/raw.zarr/raw", shape=image.shape, chunks=(1, 1, 25, 35), dtype="uint16",
                  axes="czyx")[...] = image
    res = run_pipeline(cfg, tmp_path / "exp", client=None, raw=f"{tmp_path}/raw.zarr/raw")
    assert res.ok and res.stages["predict"]["done"] > 1
    predict_volume(cfg, ckpt, f"{tmp_path}/raw.zarr/raw", tmp_path / "ref.zarr")
    for name in ("fg", "patches"):
        np.testing.assert_array_equal(open_array(f"{res.prediction}/{name}")[...],
                                      open_array(f"{tmp_path}/ref.zarr/{name}")[...])
    # the same weights without recorded settings follow the config (dtype), and predict something else
    state = read_checkpoint(ckpt)
    net = build_model(cfg.model, 1)
    net.load_state_dict(state["model_state_dict"])
    save_checkpoint(tmp_path / "bare.pt", net, iteration=7)
    predict_volume(cfg, tmp_path / "bare.pt", f"{tmp_path}/raw.zarr/raw", tmp_path / "dtype.zarr")
    assert not np.array_equal(open_array(f"{tmp_path}/dtype.zarr/fg")[...], open_array(f"{tmp_path}/ref.zarr/fg")[...])
