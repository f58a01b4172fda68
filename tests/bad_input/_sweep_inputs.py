"""Inputs, setups and checks of the bad-input sweep (``test_bad_input_sweep.py``; rows in ``_sweep_table.py``).

A setup prepares a row's folder before the command runs (and may return format values for its command line);
a check inspects what a command that exits 0 or 1 left behind.
"""

from __future__ import annotations

import os
import shutil
import sqlite3
import sys
from pathlib import Path

import numpy as np
import pytest
import zarr

EXE = Path(sys.executable).with_name("ppp-dist")
IS_ROOT = hasattr(os, "geteuid") and os.geteuid() == 0

# label on the 24 x 24 oracle prediction of patch shape (1, 5, 5): fast settings, a one-worker local cluster
LABEL = ("label --root runs --set model.patch_shape=[1,5,5] --set vote.block_shape=[1,32,32] "
         "--set cluster.n_workers=1 --set cluster.dashboard_address=:0")
INPROCESS = f"{LABEL} --set vote.blockwise=false"
ON_PRED = f"{LABEL} --input {{data}}/pred.zarr"  # blockwise label of a good prediction
TINY = "-c {data}/tiny.toml"  # the tiny network of {data}/ck.pt, that checkpoint, normalization none
EVALUATE = "evaluate --root runs --set evaluation.write_images=false"


def samples(name: str, key: str = "train_data") -> str:
    """``--set`` of ``[data] key`` to the sample ``{data}/samples/<name>.zarr`` (a format string)."""
    return "--set 'data." + key + '=["{data}/samples/' + name + '.zarr"]' + "'"


TINY_MODEL = ["patch_shape = [1, 5, 5]", 'numinst_head = "foreground"', "num_fmaps = 2", "fmap_inc_factors = [2.0]",
              "fmap_dec_factors = [2.0]", "downsample_factors = [[1, 2, 2]]", "train_input_shape = [1, 44, 44]",
              "predict_input_shape = [1, 44, 44]"]


# ------------------------------------------------------------------------------------------------ inputs


def _oracle(gt: np.ndarray, patch_shape=(1, 5, 5)) -> tuple[np.ndarray, np.ndarray]:
    from ppp_dist.ops.patches import numinst_onehot, numinst_target, patch_targets

    return ((patch_targets(gt, patch_shape) * 255).astype(np.uint8),
            (numinst_onehot(numinst_target(gt)) * 255).astype(np.uint8))


def _group(path: Path, **arrays: np.ndarray) -> None:
    group = zarr.open_group(path, mode="w")
    for name, values in arrays.items():
        group.create_array(name, data=values, chunks=tuple(max(1, s) for s in values.shape))


def make_inputs(d: Path) -> Path:
    """The shared inputs of every row, written into the empty folder ``d`` (read-only for the rows: the
    snapshot covers them too)."""
    import torch

    from ppp_dist.config import DatabaseConfig, load_config
    from ppp_dist.io.database import open_database
    from ppp_dist.learning.model import build_model, save_checkpoint

    rng = np.random.default_rng(0)
    raw = rng.random((1, 4, 16, 16), dtype=np.float32)
    nan, inf = raw.copy(), raw.copy()
    nan[0, 1, 2, 3] = np.nan
    inf[0, 2, 5, 7] = np.inf
    _group(d / "raw.zarr", raw=raw, two_channels=np.repeat(raw, 2, axis=0), flat=raw[0, 0],
           five_d=raw[None], nan=nan, inf=inf, empty=np.zeros((1, 0, 16, 16), np.float32))
    (d / "plain").mkdir()  # a folder without .zarr suffix or zarr metadata

    gt = np.zeros((1, 1, 24, 24), np.uint16)
    gt[0, 0, 2:9, 2:9] = 1
    gt[0, 0, 12:20, 12:20] = 2
    patches, numinst = _oracle(gt)
    _group(d / "pred.zarr", patches=patches, numinst=numinst)
    _group(d / "background.zarr", patches=np.zeros_like(patches), numinst=_oracle(np.zeros_like(gt))[1])
    nan_patches = patches.astype(np.float32) / 255
    nan_patches[3, 0, 5, 5] = np.nan
    _group(d / "nan_patches.zarr", patches=nan_patches, numinst=numinst.astype(np.float32) / 255)
    nan_numinst = numinst.astype(np.float32) / 255
    nan_numinst[1, 0, 7, 8] = np.nan
    _group(d / "nan_numinst.zarr", patches=patches, numinst=nan_numinst)
    _group(d / "p9.zarr", patches=_oracle(gt, (1, 3, 3))[0], numinst=numinst)
    _group(d / "mismatch.zarr", patches=patches, numinst=numinst[:, :, :20, :20].copy())
    _group(d / "codes.zarr", codes=np.zeros((8, 1, 24, 24), np.float16), numinst=numinst)
    _group(d / "empty_pred.zarr", patches=np.zeros((25, 1, 0, 24), np.uint8), numinst=np.zeros((3, 1, 0, 24), np.uint8))
    _group(d / "labels.zarr", gt=gt, pred=gt.copy(), small=gt[:, :, :12, :12].copy(), float=gt.astype(np.float32),
           empty=np.zeros((1, 1, 0, 24), np.uint16), background=np.zeros_like(gt))

    sample_raw = rng.random((1, 4, 24, 24), dtype=np.float32)
    sample_gt = np.repeat(gt, 4, axis=1)
    sample_nan = sample_raw.copy()
    sample_nan[0, 3, 20, 1] = np.nan
    for name, arrays in {"good": (sample_raw, sample_gt), "two_channels": (np.repeat(sample_raw, 2, axis=0), sample_gt),
                         "nan": (sample_nan, sample_gt), "gt_shape": (sample_raw, sample_gt[:, :2]),
                         "no_gt": (sample_raw, None)}.items():
        group = zarr.open_group(d / "samples" / f"{name}.zarr", mode="w")
        group.create_array("volumes/raw", data=arrays[0])
        if arrays[1] is not None:
            group.create_array("volumes/gt_instances", data=arrays[1])

    config = load_config([], [f"model.{line.replace(' ', '')}" for line in TINY_MODEL])
    torch.manual_seed(0)
    save_checkpoint(d / "ck.pt", build_model(config.model, 1), iteration=1)
    torch.save({"weights": torch.zeros(3)}, d / "not_ppp.pt")
    (d / "garbage.pt").write_text("this is not a checkpoint\n")
    (d / "tiny.toml").write_text("[model]\n" + "\n".join(TINY_MODEL) + "\n[data]\nnormalization = \"none\"\n"
                                 f"[prediction]\ncheckpoint = \"{d / 'ck.pt'}\"\ndevice = \"cpu\"\n")
    (d / "typo.toml").write_text("[vote]\npatch_treshold = 0.6\n")
    (d / "broken.toml").write_text("[vote\npatch_threshold = 0.6\n")

    with sqlite3.connect(d / "foreign.sqlite") as conn:
        conn.execute("CREATE TABLE blocks (a INTEGER, b TEXT)")
    with sqlite3.connect(d / "program.sqlite") as conn:
        conn.execute("CREATE TABLE users (id INTEGER, name TEXT)")
    (d / "text.sqlite").write_text("this is not a database\n")
    open_database(DatabaseConfig(path=str(d / "future.sqlite"))).close()
    with sqlite3.connect(d / "future.sqlite") as conn:
        conn.execute("UPDATE meta SET value = '99' WHERE key = 'schema_version'")
    conn.close()
    from _hostile_inputs import make_hostile_inputs

    make_hostile_inputs(d, _oracle)
    return d


# ------------------------------------------------------------------------------------------------ setups


def experiment(tmp: Path, data: Path, name: str = "exp", overrides: tuple[str, ...] = ()) -> Path:
    """An experiment folder as ``ppp-dist`` leaves it: resolved config.toml and its id."""
    from ppp_dist.config import load_config, save_config
    from ppp_dist.experiment import experiment_id

    path = tmp / name
    path.mkdir()
    save_config(load_config([data / "tiny.toml"], list(overrides)), path / "config.toml")
    experiment_id(path)
    return path


def exp_empty(tmp, data, request):
    experiment(tmp, data)


def exp_with_outputs(tmp, data, request):
    """An experiment that holds a prediction and instances already: a failing command must not touch them."""
    path = experiment(tmp, data)
    shutil.copytree(data / "pred.zarr", path / "prediction.zarr")
    instances = zarr.open_group(path / "instances.zarr", mode="w")
    instances.create_array("instances", data=np.ones((2, 1, 24, 24), np.uint32))


def exp_instances_file(tmp, data, request):
    (experiment(tmp, data) / "instances.zarr").write_text("in the way\n")


def exp_evaluation_file(tmp, data, request):
    (experiment(tmp, data) / "evaluation").write_text("in the way\n")


def exp_typo_config(tmp, data, request):
    config = experiment(tmp, data) / "config.toml"
    text = config.read_text()
    assert "[postprocess]\nmin_instance_size" in text
    config.write_text(text.replace("[postprocess]\nmin_instance_size", "[postprocess]\nmin_instance_sise"))


def exp_no_config(tmp, data, request):
    (tmp / "exp").mkdir()


def exp_garbage_checkpoint(tmp, data, request):
    train = experiment(tmp, data) / "train"
    train.mkdir()
    shutil.copy(data / "garbage.pt", train / "checkpoint_5.pt")


def exp_checkpoint_5(tmp, data, request):
    train = experiment(tmp, data) / "train"
    train.mkdir()
    shutil.copy(data / "ck.pt", train / "checkpoint_5.pt")


def a_file(tmp, data, request):
    (tmp / "afile").write_text("")


def other_experiments_database(tmp, data, request):
    """Experiment b ran label (its graph.sqlite records it); experiment exp holds a copy of that database."""
    from ppp_dist.config import DatabaseConfig
    from ppp_dist.experiment import experiment_id
    from ppp_dist.io.database import open_database

    other = experiment(tmp, data, "b")
    with open_database(DatabaseConfig(), other) as db:
        db.claim(experiment_id(other), str(other))
    shutil.copy(other / "graph.sqlite", experiment(tmp, data) / "graph.sqlite")


def read_only_root(tmp, data, request):
    if IS_ROOT:
        pytest.skip("root writes into read-only folders; the rows with a file in the way cover this as root")
    (tmp / "ro").mkdir()
    (tmp / "ro").chmod(0o555)
    request.addfinalizer(lambda: (tmp / "ro").chmod(0o755))


def too_large_to_scan(tmp, data, request):
    """As if the prediction were larger than the pre-run NaN scan reads (16 GiB): the vote blocks find the NaN."""
    request.getfixturevalue("monkeypatch").setattr("ppp_dist.tasks.preflight.PREDICTION_SCAN_LIMIT", 0)


def short_connect_timeout(tmp, data, request):
    """ppp-dist waits CONNECT_TIMEOUT_S (10 s) for a scheduler that may still be starting; 1 s here."""
    request.getfixturevalue("monkeypatch").setattr("ppp_dist.pipeline.cluster.CONNECT_TIMEOUT_S", 1.0)


def postgres_foreign_schema(tmp, data, request):
    import psycopg2

    dsn = request.getfixturevalue("postgres_dsn")
    with psycopg2.connect(dsn) as conn, conn.cursor() as cur:
        cur.execute("CREATE TABLE blocks (a INTEGER, b TEXT)")
    conn.close()
    return {"dsn": dsn}


def postgres_other_experiment(tmp, data, request):
    from ppp_dist.config import DatabaseConfig
    from ppp_dist.io.database import open_database

    dsn = request.getfixturevalue("postgres_dsn")
    with open_database(DatabaseConfig(backend="postgres", dsn=dsn)) as db:
        db.claim("another-run", "/elsewhere/ppp_250101_120000")
    return {"dsn": dsn}


# ------------------------------------------------------------------------------------------------ checks


def all_zero_instances(tmp: Path, out: str, err: str) -> None:
    from ppp_dist.io import volumes

    (exp,) = (tmp / "runs").iterdir()
    instances = volumes.open_array(f"{exp}/instances.zarr/instances")
    assert instances.shape == (2, 1, 24, 24) and not np.asarray(instances[...]).any()
    assert "label: 0 instances" in out


def two_instances(tmp: Path, out: str, err: str) -> None:
    from ppp_dist.io import volumes

    (exp,) = (tmp / "runs").iterdir()
    instances = np.asarray(volumes.open_array(f"{exp}/instances.zarr/instances")[...])
    assert instances.max() == 2 and "warning" not in err


def one_vote_block(tmp: Path, out: str, err: str) -> None:
    two_instances(tmp, out, err)
    assert "vote: 1 blocks | done 1 | failed 0" in out


def prediction_written(tmp: Path, out: str, err: str) -> None:
    from ppp_dist.io import volumes

    (exp,) = (tmp / "runs").iterdir()
    assert volumes.open_array(f"{exp}/prediction.zarr/patches").shape == (25, 4, 16, 16)


def failed_block_recorded(tmp: Path, out: str, err: str) -> None:
    """The block that met the NaN is in the ledger with its error; no instances were painted."""
    (exp,) = (tmp / "runs").iterdir()
    with sqlite3.connect(exp / "graph.sqlite") as conn:
        rows = conn.execute("SELECT stage, status, error FROM blocks").fetchall()
    conn.close()
    assert rows and all(r[:2] == ("vote", "failed") and "NaN" in r[2] for r in rows), rows
    assert "vote: 1 blocks | done 0 | failed 1" in out and not (exp / "instances.zarr").exists()


def nothing_written(tmp: Path, out: str, err: str) -> None:
    assert not list(tmp.iterdir()) and "nothing was written" in out
