"""scripts/convert_to_zarr.py and ppp_dist.tasks.convert: TIFF / PNG / mask folders -> zarr samples and their errors."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

import imageio.v3 as iio
import numpy as np
import pytest
import tifffile
import zarr

from ppp_dist.errors import InputDataError
from ppp_dist.io import volumes
from ppp_dist.tasks.convert import convert_per_file, convert_sample, read_image, read_instance_masks

SCRIPT = Path(__file__).resolve().parents[1] / "scripts" / "convert_to_zarr.py"


def _script():
    spec = importlib.util.spec_from_file_location("convert_to_zarr", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.fixture
def stack(tmp_path):
    """A 5-slice uint16 TIFF stack and its flat uint16 label stack."""
    rng = np.random.default_rng(0)
    raw = rng.integers(0, 4000, size=(5, 24, 32), dtype=np.uint16)
    labels = np.zeros((5, 24, 32), dtype=np.uint16)
    labels[:, 2:10, 3:12] = 4
    labels[1:4, 12:20, 15:30] = 9
    tifffile.imwrite(tmp_path / "raw.tif", raw)
    tifffile.imwrite(tmp_path / "labels.tif", labels)
    return raw, labels


def test_tiff_stack_round_trip(tmp_path, stack):
    raw, labels = stack
    info = convert_sample(str(tmp_path / "raw.tif"), tmp_path / "s.zarr", labels=str(tmp_path / "labels.tif"),
                          voxel_size=(4.0, 1.0, 1.0))
    arr = volumes.open_array(f"{tmp_path}/s.zarr/volumes/raw")
    assert arr.shape == (1, 5, 24, 32) and arr.dtype == np.uint16
    np.testing.assert_array_equal(arr[0], raw)
    gt = volumes.open_array(f"{tmp_path}/s.zarr/volumes/gt_instances")
    assert gt.shape == (1, 5, 24, 32) and gt.dtype == np.uint16
    np.testing.assert_array_equal(gt[0], labels)
    assert info.num_instances == 2 and info.gt_shape == (1, 5, 24, 32)
    assert volumes.axes_of(arr) == "czyx" and volumes.voxel_size_of(arr) == (4.0, 1.0, 1.0)
    ome = dict(zarr.open_group(tmp_path / "s.zarr", mode="r")["volumes"].attrs)["ome"]
    entry = next(m for m in ome["multiscales"] if m["name"] == "raw")
    assert [a["name"] for a in entry["axes"]] == ["c", "z", "y", "x"]
    assert entry["datasets"][0]["coordinateTransformations"][0]["scale"] == [1.0, 4.0, 1.0, 1.0]


def test_png_folder_is_a_stack_of_slices_in_natural_order(tmp_path):
    folder = tmp_path / "slices"
    folder.mkdir()
    for z in (1, 2, 10):  # natural order: s2 before s10
        iio.imwrite(folder / f"s{z}.png", np.full((8, 9), z, dtype=np.uint8))
    image = read_image(folder)
    assert image.shape == (1, 3, 8, 9) and image.dtype == np.uint8
    assert list(image[0, :, 0, 0]) == [1, 2, 10]


def test_png_colour_needs_gray_or_channel_axis(tmp_path):
    rgb = np.zeros((6, 7, 3), dtype=np.uint8)
    rgb[..., 0], rgb[..., 1], rgb[..., 2] = 30, 60, 90
    iio.imwrite(tmp_path / "rgb.png", rgb)
    with pytest.raises(InputDataError, match="has colour channels .* pass --gray"):
        read_image(tmp_path / "rgb.png")
    gray = read_image(tmp_path / "rgb.png", gray=True)
    assert gray.shape == (1, 1, 6, 7) and gray.dtype == np.float32 and np.all(gray == 60)
    kept = read_image(tmp_path / "rgb.png", channel_axis=2)
    assert kept.shape == (3, 1, 6, 7) and list(kept[:, 0, 0, 0]) == [30, 60, 90]


def _write_masks(folder: Path) -> list[np.ndarray]:
    folder.mkdir()
    masks = [np.zeros((16, 20), dtype=np.uint8) for _ in range(3)]
    masks[0][2:10, 2:10] = 255
    masks[1][6:14, 6:18] = 255  # overlaps mask 0 in [6:10, 6:10]
    masks[2][12:16, 0:4] = 1
    for i, m in enumerate(masks, start=1):
        iio.imwrite(folder / f"A01_{i:02d}_ground_truth.png", m)
    return masks


def test_instance_masks_become_channels_with_overlap_preserved(tmp_path):
    masks = _write_masks(tmp_path / "masks")
    iio.imwrite(tmp_path / "raw.png", np.ones((16, 20), dtype=np.uint8))
    info = convert_sample(str(tmp_path / "raw.png"), tmp_path / "w.zarr",
                          label_masks=str(tmp_path / "masks" / "A01_*_ground_truth.png"))
    gt = volumes.open_array(f"{tmp_path}/w.zarr/volumes/gt_instances")[:]
    assert gt.shape == (3, 1, 16, 20) and info.num_instances == 3
    for i, m in enumerate(masks, start=1):
        np.testing.assert_array_equal(gt[i - 1, 0], np.where(m != 0, i, 0))
    assert np.count_nonzero(gt[:, 0, 7, 7]) == 2  # the overlap voxel keeps both worms


def test_instance_masks_flat_packs_later_wins(tmp_path):
    _write_masks(tmp_path / "masks")
    flat = read_instance_masks(tmp_path / "masks", flat=True)
    assert flat.shape == (1, 1, 16, 20)
    assert flat[0, 0, 7, 7] == 2 and flat[0, 0, 3, 3] == 1 and flat[0, 0, 13, 1] == 3


def test_several_raw_inputs_are_channels_and_labels_cc(tmp_path):
    a = np.full((2, 10, 12), 1, dtype=np.uint16)
    tifffile.imwrite(tmp_path / "w1.tif", a)
    tifffile.imwrite(tmp_path / "w2.tif", a * 2)
    boundary = np.full((2, 10, 12), 255, dtype=np.uint8)
    boundary[:, :, 6] = 0  # a membrane splits each slice in two cells
    tifffile.imwrite(tmp_path / "b.tif", boundary)
    info = convert_sample([str(tmp_path / "w1.tif"), str(tmp_path / "w2.tif")], tmp_path / "s.zarr",
                          labels=str(tmp_path / "b.tif"), labels_cc="2d")
    assert info.raw_shape == (2, 2, 10, 12) and info.num_instances == 4
    gt = volumes.open_array(f"{tmp_path}/s.zarr/volumes/gt_instances")[0]
    assert gt[0, 0, 0] != gt[1, 0, 0] and gt[0, 0, 0] != gt[0, 0, 11] and gt[0, 0, 6] == 0


def test_per_file_mode_matches_labels_by_name(tmp_path):
    (tmp_path / "images").mkdir()
    (tmp_path / "masks").mkdir()
    for name in ("a", "b"):
        tifffile.imwrite(tmp_path / "images" / f"{name}.tif", np.ones((8, 8), dtype=np.uint8))
        tifffile.imwrite(tmp_path / "masks" / f"{name}.tif", np.eye(8, dtype=np.uint16))
    results = convert_per_file(tmp_path / "images", tmp_path / "out", labels_dir=tmp_path / "masks")
    assert [r.path.name for r in results] == ["a.zarr", "b.zarr"]
    assert all(r.gt_shape == (1, 1, 8, 8) for r in results)


@pytest.mark.parametrize("argv, message", [
    (["--raw", "{tmp}/missing.tif"], "does not exist"),
    (["--raw", "{tmp}/image.jpg"], "unsupported extension '.jpg'"),
    (["--raw", "{tmp}/*.nothing"], "no file matches"),
    (["--raw", "{tmp}/raw.tif", "--labels", "{tmp}/small.tif"], "must match"),
    (["--raw", "{tmp}/raw.tif", "--labels", "{tmp}/float.tif"], "non-integer values"),
    (["--raw", "{tmp}/raw.tif", "--labels-flat"], "only applies to --label-masks"),
    (["--raw", "{tmp}/data.h5/volumes/raw"], "needs the optional dependency h5py; install it with "
                                            "pip install h5py"),
])
def test_bad_inputs_are_one_sentence_exit_2(argv, message, tmp_path, stack, capsys, monkeypatch):
    monkeypatch.setitem(sys.modules, "h5py", None)  # as if h5py were not installed
    (tmp_path / "image.jpg").write_bytes(b"not an image")
    tifffile.imwrite(tmp_path / "small.tif", np.zeros((5, 10, 10), dtype=np.uint16))
    tifffile.imwrite(tmp_path / "float.tif", np.full((5, 24, 32), 0.5, dtype=np.float32))
    argv = [a.format(tmp=tmp_path) for a in argv] + ["--out", str(tmp_path / "o.zarr")]
    assert _script().main(argv) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("convert_to_zarr: error: ") and message in err[0]
    assert not (tmp_path / "o.zarr").exists()


def test_hdf5_missing_dependency_raises_input_data_error(monkeypatch, tmp_path):
    monkeypatch.setitem(sys.modules, "h5py", None)
    with pytest.raises(InputDataError, match=r"pip install h5py"):
        read_image(f"{tmp_path}/sample.hdf/volumes/raw")


def test_script_writes_a_sample_plan_accepts(tmp_path, stack, capsys):
    from ppp_dist.cli import main as ppp_main
    argv = ["--raw", str(tmp_path / "raw.tif"), "--labels", str(tmp_path / "labels.tif"),
            "--out", str(tmp_path / "s.zarr")]
    assert _script().main(argv) == 0
    assert "volumes/gt_instances (1, 5, 24, 32) with 2 instances" in capsys.readouterr().out
    assert ppp_main(["plan", "--input", f"{tmp_path}/s.zarr/volumes/raw"]) == 0


def test_packaged_nuclei_are_written_as_disjoint_labelled_splits(tmp_path):
    """The real DSB2018 image and the synthetic 3D volume that stardist ships, cut into train/val/test."""
    from ppp_dist.data.packaged_nuclei import SPLITS_2D, write_nuclei2d, write_nuclei3d
    from ppp_dist.io.volumes import open_array

    two = write_nuclei2d(tmp_path / "2d")
    three = write_nuclei3d(tmp_path / "3d")
    covered = np.zeros((512, 512), int)
    for split, (ys, xs) in SPLITS_2D.items():
        covered[ys, xs] += 1
        raw = open_array(f"{two[split]}/volumes/raw")
        gt = open_array(f"{two[split]}/volumes/gt_instances")[...]
        assert raw.dtype == np.uint16 and raw.shape == (1, 1, ys.stop - ys.start, xs.stop - xs.start)
        assert len(np.unique(gt)) > 25  # dozens of nuclei in each region
    assert covered.max() == 1 and covered.min() == 1  # disjoint, and together the whole image
    assert open_array(f"{three['test']}/volumes/raw").shape[-3:] == (31, 61, 14)


def test_an_unreadable_file_is_one_line(tmp_path):
    """imageio's error spans four lines; convert_to_zarr prints one."""
    import subprocess
    import sys
    from pathlib import Path

    (tmp_path / "bad.png").write_text("garbage\n")
    script = Path(__file__).resolve().parents[1] / "scripts" / "convert_to_zarr.py"
    result = subprocess.run([sys.executable, str(script), "--raw", str(tmp_path / "bad.png"), "--out",
                             str(tmp_path / "o.zarr")], capture_output=True, text=True, timeout=120)
    assert result.returncode == 2
    (line,) = result.stderr.strip().splitlines()
    assert line.startswith(f"convert_to_zarr: error: cannot read {tmp_path / 'bad.png'}: ") and "Traceback" not in line
    assert not (tmp_path / "o.zarr").exists()
