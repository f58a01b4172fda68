"""Evaluate stage: blockwise (threads and a real 2-process LocalCluster) equals whole-array, reports."""

from __future__ import annotations

import csv
import json
import tomllib
from pathlib import Path

import numpy as np
import pytest
import zarr

from ppp_dist.errors import ConfigError, InputDataError
from ppp_dist.ops.overlap_table import overlap_table
from ppp_dist.tasks.evaluation import compute_overlap_table, evaluate_arrays, evaluate_files
from ppp_dist.tasks.report import to_toml

_TABLE_FIELDS = ("gt_ids", "gt_sizes", "pred_ids", "pred_sizes", "pair_gt", "pair_pred", "pair_count")


def _write(path, name, data, chunks):
    group = zarr.open_group(str(path), mode="a")
    arr = group.create_array(name, shape=data.shape, chunks=chunks, dtype=data.dtype)
    arr[...] = data
    return f"{path}/{name}"


def _scene(seed=0, shape=(20, 24, 28)):
    """GT: a 2-channel stack of random boxes that overlap across channels; prediction: a flat, shifted
    and partly merged copy."""
    rng = np.random.default_rng(seed)
    gt = np.zeros((2,) + shape, np.uint32)
    for i in range(1, 13):
        c = i % 2
        lo = [int(rng.integers(0, s - 4)) for s in shape]
        hi = [min(s, a + int(rng.integers(3, 9))) for a, s in zip(lo, shape)]
        region = gt[c, lo[0]:hi[0], lo[1]:hi[1], lo[2]:hi[2]]
        region[region == 0] = i + 100 * c
    pred = np.roll(gt.max(axis=0), 1, axis=2)[None].astype(np.uint64)
    pred[pred == 105] = 103
    return gt, pred


def _assert_same_table(a, b):
    for name in _TABLE_FIELDS:
        np.testing.assert_array_equal(getattr(a, name), getattr(b, name), err_msg=name)
    assert a.n_voxels == b.n_voxels


@pytest.fixture
def scene_paths(tmp_path):
    gt, pred = _scene()
    g = _write(tmp_path / "gt.zarr", "labels", gt, (2, 8, 8, 8))
    p = _write(tmp_path / "pred.zarr", "seg/instances", pred, (1, 8, 8, 8))
    return g, p, gt, pred


@pytest.mark.parametrize("block", [(8, 8, 8), (7, 11, 5), (64, 64, 64)])
def test_blockwise_table_equals_whole_array(scene_paths, block):
    g, p, gt, pred = scene_paths
    whole = overlap_table(gt, pred)
    _assert_same_table(compute_overlap_table(g, p), whole)
    _assert_same_table(compute_overlap_table(g, p, block_shape=block, fan_in=3), whole)


def test_blockwise_on_a_two_process_local_cluster(scene_paths, tmp_path):
    from distributed import Client, LocalCluster

    g, p, gt, pred = scene_paths
    with LocalCluster(n_workers=2, processes=True, threads_per_worker=1, dashboard_address=None) as cluster, \
            Client(cluster) as client:
        table = compute_overlap_table(g, p, block_shape=(8, 8, 8), client=client)
        blockwise = evaluate_files([p], [g], tmp_path / "dist", block_shape=(8, 8, 8), client=client,
                                   write_images=False)
    _assert_same_table(table, overlap_table(gt, pred))
    whole = evaluate_arrays(gt, pred)
    got = [r["s"] for r in blockwise["images"][0]["per_threshold"]]
    assert got == [r["s"] for r in whole["per_threshold"]]


def test_evaluate_files_iou_reports(tmp_path):
    specs_gt, specs_pred = [], []
    for k in range(2):
        gt = np.zeros((40, 50), np.uint16)
        for i in range(6):
            y, x = 4 + 18 * (i // 3), 3 + 16 * (i % 3)
            gt[y:y + 10, x:x + 10 + k] = i + 1
        pred = gt.copy()
        pred[pred == 2 + k] = 0                    # one missed instance
        pred[pred == 5] = 4                        # one merge
        pred[0:2, 0:2] = 99                        # tiny false positive, removed by min_instance_size
        specs_gt.append(_write(tmp_path / f"s{k}.zarr", "gt", gt, (16, 16)))
        specs_pred.append(_write(tmp_path / f"s{k}.zarr", "pred", pred, (16, 16)))
    out = tmp_path / "report"
    res = evaluate_files(specs_pred, specs_gt, out, isbi=True, min_instance_size=4, block_shape=(1, 16, 16))
    files = res["files"]
    for key in ("per_image_csv", "summary_csv", "results_json", "results_toml", "report_md", "scores_png"):
        assert (out / files[key].split("/")[-1]).exists(), key
    for png in files["overlays"].split(";") + [files["scores_png"]]:
        assert Path(png).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    js = json.loads((out / "results.json").read_text())
    tm = tomllib.loads((out / "results.toml").read_text())
    assert tm["images"][1]["S_0.5"] == js["images"][1]["S_0.5"]
    assert tm["pooled"]["per_threshold"][4] == js["pooled"]["per_threshold"][4]
    assert (js["images"][0]["n_gt"], js["images"][0]["n_pred"]) == (6, 4)
    assert js["images"][0]["S_0.5"] == pytest.approx(4 / 6)       # merge has IoU 0.5 with instance 4
    assert js["images"][0]["S_0.6"] == pytest.approx(3 / 7)       # TP 3, FP 1, FN 3
    assert 0 < js["images"][0]["isbi"]["v_rand"] < 1 and "v_info" in js["mean"]
    rows = list(csv.DictReader((out / "summary.csv").read_text().splitlines()))
    assert [r["name"] for r in rows][-2:] == ["mean", "pooled"] and "avS" in rows[0]
    per_image = list(csv.DictReader((out / "per_image.csv").read_text().splitlines()))
    assert len(per_image) == 2 * 9
    md = (out / "report.md").read_text()
    assert "![scores](scores.png)" in md and "| pooled |" in md


def test_evaluate_files_cldice_3d(tmp_path):
    gt = np.zeros((1, 12, 20, 40), np.uint8)
    gt[0, 4:8, 3:7, 2:38] = 1
    gt[0, 4:8, 12:16, 2:38] = 2
    pred = gt.copy()
    pred[0, 4:8, 3:16, 2:38] = 3                  # merge both tubes
    g = _write(tmp_path / "t.zarr", "gt", gt, (1, 12, 20, 40))
    p = _write(tmp_path / "t.zarr", "pred", pred, (1, 12, 20, 40))
    res = evaluate_files([p], [g], tmp_path / "out", criterion="cldice")
    img = res["images"][0]
    assert res["config"]["assignment"] == "greedy"
    assert (img["FM"], img["FS"], img["n_pred"]) == (1, 0, 1)
    assert res["pooled"]["FM"] == 1 and "avF1" in (tmp_path / "out" / "summary.csv").read_text()


def test_bad_input_is_one_clear_error(tmp_path):
    g = _write(tmp_path / "a.zarr", "gt", np.zeros((4, 5), np.uint8), (4, 5))
    p = _write(tmp_path / "a.zarr", "pred", np.zeros((4, 6), np.uint8), (4, 6))
    f = _write(tmp_path / "a.zarr", "float", np.zeros((4, 5), np.float32), (4, 5))
    with pytest.raises(InputDataError, match="spatial shape"):
        evaluate_files([p], [g], tmp_path / "o")
    with pytest.raises(InputDataError, match="integer dtype"):
        evaluate_files([f], [g], tmp_path / "o")
    with pytest.raises(ConfigError, match="one ground truth per prediction"):
        evaluate_files([p, p], [g], tmp_path / "o")
    with pytest.raises(ConfigError, match="criterion must be"):
        evaluate_files([g], [g], tmp_path / "o", criterion="dice")
    with pytest.raises(ConfigError, match="block_shape"):
        evaluate_files([g], [g], tmp_path / "o", block_shape=(4, 4))
    with pytest.raises(InputDataError, match="did you mean 'gt'"):
        evaluate_files([str(tmp_path / "a.zarr" / "gtt")], [g], tmp_path / "o")


def test_toml_writer_round_trips():
    data = {"a": 1, "b": 2.5, "n": None, "s": 'q"uote', "S_0.5": 0.25, "flag": True, "xs": [1, 2],
            "t": {"k k": [0.1, None], "rows": [{"x": 1, "sub": {"y": "z"}}, {"x": 2}], "empty": []}}
    back = tomllib.loads(to_toml(data))
    assert back == {"a": 1, "b": 2.5, "s": 'q"uote', "S_0.5": 0.25, "flag": True, "xs": [1, 2],
                    "t": {"k k": [0.1], "rows": [{"x": 1, "sub": {"y": "z"}}, {"x": 2}], "empty": []}}


def test_overlay_keeps_the_aspect_ratio_and_labels_the_extent(tmp_path):
    """A 700 x 1100 frame (the report squeezed it into a tall panel): every panel and the saved PNG keep its
    aspect within 2 %, and the axes name the full image's extent."""
    from ppp_dist.tasks.evaluation import label_projection
    from ppp_dist.tasks.report import _pyplot, overlay_figure, plot_overlay

    gt = np.zeros((700, 1100), np.uint16)
    gt[100:300, 200:400] = 1
    spec = _write(tmp_path / "wide.zarr", "gt", gt, (350, 550))
    projection = label_projection(spec, max_side=1024)  # subsampled: one step for both axes
    assert abs(projection.shape[1] / projection.shape[0] - 1100 / 700) / (1100 / 700) < 0.02
    fig = overlay_figure(projection, projection, "wide", size=(700, 1100))
    fig.canvas.draw()
    for ax in fig.axes:
        box = ax.get_window_extent()
        assert abs(box.width / box.height - 1100 / 700) / (1100 / 700) < 0.02, (box.width, box.height)
        assert ax.get_xlabel() == "x: 0 - 1100 px" and ax.get_ylabel() == "y: 0 - 700 px"
        assert ax.get_xlim() == (0.0, 1100.0) and ax.get_ylim() == (700.0, 0.0)
    _pyplot().close(fig)
    path = plot_overlay(projection, projection, tmp_path / "wide.png", "wide", size=(700, 1100))
    import imageio.v3 as iio

    image = iio.imread(path)
    assert image.shape[1] > image.shape[0]  # a wide figure for a wide frame, not a tall one
