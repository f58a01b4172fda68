"""The command line: help, exit codes, one-sentence errors, experiment folders, plan."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import zarr

from ppp_dist.cli import build_parser, main
from ppp_dist.tasks import GROUPS, TASKS

ALL_COMMANDS = list(TASKS) + list(GROUPS) + ["plan", "status", "show-config", "demo"]


def run(capsys, *argv):
    code = main(list(argv))
    out, err = capsys.readouterr()
    return code, out, err


def one_sentence_error(err: str) -> str:
    lines = [line for line in err.splitlines() if line.strip()]
    assert len(lines) == 1, f"expected one line on stderr, got {lines}"
    assert lines[0].startswith("ppp-dist: error: ") or lines[0].startswith("ppp-dist")
    assert "Traceback" not in err
    return lines[0]


@pytest.mark.parametrize("command", ALL_COMMANDS)
def test_every_command_explains_itself(command, capsys):
    code = main([command, "--help"])
    out = capsys.readouterr().out
    assert code == 0
    assert out.startswith("usage: ppp-dist " + command)
    assert len(out.splitlines()) > 4


def test_console_script_and_module_agree():
    exe = Path(sys.executable).with_name("ppp-dist")
    by_script = subprocess.run([str(exe), "--help"], capture_output=True, text=True, check=True).stdout
    by_module = subprocess.run([sys.executable, "-m", "ppp_dist", "--help"], capture_output=True, text=True,
                               check=True).stdout
    assert by_script == by_module
    for command in ALL_COMMANDS:
        assert command in by_script


def test_do_style_task_list(capsys, tmp_path):
    code, _, err = run(capsys, "--do", "train", "label", "--root", str(tmp_path))
    assert code == 2  # the task list parses; train then lacks its samples
    assert "train needs samples: set [data] train_data" in one_sentence_error(err)
    assert not list(tmp_path.iterdir())
    code, _, err = run(capsys, "--do", "trian")
    assert code == 2 and "unknown: trian" in one_sentence_error(err)


def test_usage_errors_exit_2(capsys):
    code, _, err = run(capsys, "frobnicate")
    assert code == 2 and "invalid choice: 'frobnicate'" in one_sentence_error(err)
    code, _, _ = run(capsys)
    assert code == 2


def test_config_typo_is_one_sentence_with_suggestion(capsys, tmp_path):
    bad = tmp_path / "bad.toml"
    bad.write_text("[vote]\npatch_treshold = 0.6\n")
    code, _, err = run(capsys, "plan", "--config", str(bad), "--input", "x.zarr/raw")
    assert code == 2
    assert "did you mean 'patch_threshold'?" in one_sentence_error(err)
    code, _, err = run(capsys, "show-config", "--set", "vote.selection=best")
    assert code == 2 and "selection must be one of 'local', 'greedy', got 'best'" in one_sentence_error(err)


def test_show_config_prints_resolved_toml(capsys):
    code, out, _ = run(capsys, "show-config", "--set", "vote.selection=greedy", "--set", "vote.blockwise=false")
    assert code == 0
    assert 'selection = "greedy"' in out and "[training.sampling]" in out


@pytest.fixture
def raw_zarr(tmp_path):
    path = tmp_path / "vol.zarr"
    group = zarr.open_group(path, mode="w")
    group.create_array("raw", data=np.zeros((2, 40, 70, 90), dtype=np.uint8), chunks=(2, 20, 35, 45))
    group.create_array("flat", data=np.zeros((3, 3), dtype=np.uint8))
    return path


def test_plan_prints_blocks_and_writes_nothing(capsys, raw_zarr):
    before = sorted(p.name for p in raw_zarr.rglob("*"))
    code, out, _ = run(capsys, "plan", "--input", f"{raw_zarr}/raw", "--set", "data.num_channels=2",
                       "--set", "vote.block_shape=[32, 32, 32]")
    assert code == 0
    assert "2 channel(s) x (40, 70, 90)" in out
    vote_line = next(line for line in out.splitlines() if line.startswith("vote"))
    assert vote_line.split()[1] == str(2 * 3 * 3)  # ceil(40/32) * ceil(70/32) * ceil(90/32)
    assert "(33, 33, 33)" in vote_line  # halo 11 h, h = 3
    # voxels read per voxel: the blocks' read boxes (clipped to the volume) summed, over the volume
    from ppp_dist import geometry
    from ppp_dist.tasks.plan import read_factor

    blocks = geometry.tile((40, 70, 90), (32, 32, 32), (33, 33, 33))
    exact = sum(b.read_box.size for b in blocks) / (40 * 70 * 90)
    assert read_factor((40, 70, 90), (32, 32, 32), (33, 33, 33)) == pytest.approx(exact, rel=1e-12)
    assert f"reads {exact:.2f} voxels per voxel" in vote_line
    # 512 = 4 blocks of 128 per axis, halo 22: read lengths 150, 172, 172, 150
    assert read_factor((512,) * 3, (128,) * 3, (22,) * 3) == pytest.approx((644 / 512) ** 3)
    assert "nothing was written" in out
    assert sorted(p.name for p in raw_zarr.rglob("*")) == before


def test_plan_prints_the_network_per_voxel_and_bounds_the_mutex_watershed(capsys, raw_zarr):
    """The network output voxels per voxel, stored and fused, from the tiles each block computes; the mutex
    watershed's driver memory, refused in one sentence above [vote] mws_max_memory_gib."""
    from ppp_dist import geometry
    from ppp_dist.config import config_from_table
    from ppp_dist.learning.predict import tile_geometry
    from ppp_dist.tasks.plan import network_ratio

    args = ["plan", "--input", f"{raw_zarr}/raw", "--set", "data.num_channels=2",
            "--set", "vote.block_shape=[32, 32, 32]"]
    code, out, _ = run(capsys, *args)
    assert code == 0
    line = next(x for x in out.splitlines() if x.startswith("network"))
    out_tile = tile_geometry(config_from_table({}).model).output_shape
    shape = (40, 70, 90)
    stored = np.prod([-(-s // t) * t for s, t in zip(shape, out_tile)]) / np.prod(shape)
    assert network_ratio(shape, out_tile) == pytest.approx(stored)
    # fused: every vote block's read box rounded out to whole tiles, summed over the blocks
    fused = sum(np.prod([-(-(min(s, (b.read_box.end[k] + t - 1) // t * t) - b.read_box.begin[k] // t * t) // t) * t
                         for k, (s, t) in enumerate(zip(shape, out_tile))])
                for b in geometry.tile(shape, (32, 32, 32), (33, 33, 33))) / np.prod(shape)
    ratio = network_ratio(shape, out_tile, fused=True, block_shape=(32, 32, 32), halo=(33, 33, 33))
    assert ratio == pytest.approx(fused) and ratio > stored
    assert f"{stored:.2f} output voxels per voxel with the stored prediction" in line and f"{fused:.2f} fused" in line
    assert "this run: stored" in line and "driver" not in out
    code, out, _ = run(capsys, *args, "--set", "vote.partition=mutex_watershed")
    assert code == 0 and "mutex_watershed would hold ~" in out
    code, out, err = run(capsys, *args, "--set", "vote.partition=mutex_watershed", "--set",
                         "vote.mws_max_memory_gib=0.00001")
    assert code == 2 and "over [vote] mws_max_memory_gib = 1e-05" in err and len(err.strip().splitlines()) == 1


def test_plan_counts_blocks_without_making_them(monkeypatch):
    """plan's summary is O(1) in the block count: an 8192^3 volume (2 million vote blocks) makes no block."""
    from ppp_dist import geometry
    from ppp_dist.config import load_config
    from ppp_dist.limits import grid_blocks
    from ppp_dist.tasks.plan import plan_volume

    def no_blocks(*args, **kwargs):
        raise AssertionError("plan made the blocks one by one")

    monkeypatch.setattr(geometry, "tile", no_blocks)
    monkeypatch.setattr(geometry.BlockGrid, "__iter__", no_blocks)
    monkeypatch.setattr(geometry.BlockGrid, "block", no_blocks)
    stages = {s.stage: s for s in plan_volume(load_config([], []), (8192, 8192, 8192))}
    assert stages["vote"].blocks == stages["paint"].blocks == 128 ** 3 == grid_blocks((8192,) * 3, (64,) * 3)
    monkeypatch.undo()
    for shape, block in (((40, 70, 90), (32, 32, 32)), ((1, 24, 24), (64, 64, 64)), ((7, 5, 3), (2, 2, 2))):
        assert grid_blocks(shape, block) == len(geometry.tile(shape, tuple(min(b, s) for b, s in zip(block, shape))))


@pytest.mark.parametrize("argv, expected", [
    (["plan"], "needs a volume: pass --input"),
    (["plan", "--input", "{dir}/missing.zarr/raw"], "missing.zarr"),
    (["plan", "--input", "{dir}/vol.zarr/rwa"], "rwa"),
    (["plan", "--input", "{dir}/vol.zarr/flat"], "2 dimensions"),
    (["plan", "--input", "{dir}/vol.zarr/raw"], "has 2 channels but [data] num_channels = 1"),
    (["status", "{dir}/nope"], "does not exist"),
    (["status", "{dir}"], "is not a ppp_dist experiment folder"),
])
def test_bad_input_is_one_sentence_exit_2(argv, expected, capsys, raw_zarr):
    argv = [a.format(dir=raw_zarr.parent) for a in argv]
    code, _, err = run(capsys, *argv)
    assert code == 2
    assert expected in one_sentence_error(err)


def test_experiment_folder_created_resumed_and_status(tmp_path, capsys):
    from ppp_dist.experiment import open_experiment

    exp = open_experiment(root=tmp_path, exp=None, configs=[], overrides=["vote.partition=mutex_watershed"])
    assert exp.path.parent == tmp_path and exp.path.name.startswith("ppp_")
    again = open_experiment(root=None, exp=exp.path, configs=[], overrides=[])
    assert again.config == exp.config  # resumed from the saved config
    changed = open_experiment(root=None, exp=exp.path, configs=[], overrides=["vote.partition=connected_components"])
    assert changed.config.vote.partition == "connected_components"
    assert len(list((exp.path / "backups").glob("config_*.toml"))) == 1  # the old config is kept
    code, out, _ = run(capsys, "status", str(exp.path))
    assert code == 0 and f"experiment {exp.path}" in out and "label" in out


def test_unwritable_experiment_root_is_one_sentence(tmp_path, capsys):
    blocker = tmp_path / "a_file"  # a folder cannot be made inside a file, not even by root
    blocker.write_text("")
    code, _, err = run(capsys, "demo", "--root", str(blocker))
    assert code == 2
    assert "cannot be written" in one_sentence_error(err)
    code, _, err = run(capsys, "demo", "--exp", str(tmp_path / "nope"))
    assert code == 2 and "does not exist; use --root" in one_sentence_error(err)


def test_parser_lists_every_task():
    parser = build_parser()
    text = parser.format_help()
    for name in TASKS:
        assert name in text


def test_evaluate_command_writes_reports(tmp_path, capsys):
    store = tmp_path / "labels.zarr"
    gt = np.zeros((1, 12, 20, 20), dtype=np.uint16)
    gt[0, 2:10, 2:9, 2:9] = 1
    gt[0, 2:10, 11:18, 11:18] = 2
    pred = gt.copy()
    pred[0, 2:10, 11:18, 11:18] = 0  # one instance missed: S_t = 1 / (1 + 0 + 1)
    group = zarr.open_group(store, mode="w")
    group.create_array("gt", data=gt, chunks=(1, 6, 10, 10))
    group.create_array("pred", data=pred, chunks=(1, 6, 10, 10))
    code, out, err = run(capsys, "evaluate", "--root", str(tmp_path / "runs"), "--input", f"{store}/pred",
                         "--gt", f"{store}/gt", "--set", "evaluation.block_shape=[6, 10, 10]")
    assert code == 0, err
    assert "avS 0.5000, S_0.5 0.5000" in out
    (exp,) = (tmp_path / "runs").iterdir()
    for name in ("report.md", "results.json", "results.toml", "summary.csv", "per_image.csv", "scores.png"):
        assert (exp / "evaluation" / name).is_file(), name
    code, _, err = run(capsys, "evaluate", "--root", str(tmp_path / "runs"), "--input", f"{store}/pred")
    assert code == 2 and "evaluate needs the ground truth: pass --gt" in one_sentence_error(err)
    code, _, err = run(capsys, "evaluate", "--root", str(tmp_path / "runs"), "--gt", f"{store}/gt")
    assert code == 2 and "evaluate needs predicted labels: pass --input" in one_sentence_error(err)
    assert len(list((tmp_path / "runs").iterdir())) == 1  # the failed call wrote no experiment folder
    code, _, err = run(capsys, "evaluate", "--root", str(tmp_path / "runs"), "--input", f"{store}/pred",
                       "--gt", f"{store}/gtt")
    assert code == 2 and "did you mean 'gt'" in one_sentence_error(err)
