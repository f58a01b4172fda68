"""Tests for ppp_dist.io.volumes and ppp_dist.io.ome on real zarr stores under tmp_path."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import zarr
from zarr.storage import LocalStore, ZipStore

from ppp_dist.errors import ConfigError, InputDataError, StorageError
from ppp_dist.geometry import Box, check_chunk_alignment, tile
from ppp_dist.io import volumes
from ppp_dist.io.volumes import (
    check_array,
    check_block_alignment,
    choose_chunks,
    offset_of,
    open_array,
    parse_array_path,
    prepare_array,
    read_box,
    read_box_padded,
    voxel_size_of,
    write_box,
)


def _attrs(path) -> dict:
    with open(path, encoding="utf-8") as f:
        return json.load(f)["attributes"]


@pytest.fixture
def v2_store(tmp_path):
    """A zarr v2 store as the original PatchPerPix wrote it: volumes/raw (C, Z, Y, X) with resolution."""
    path = tmp_path / "sample.zarr"
    group = zarr.open_group(LocalStore(path), mode="w", zarr_format=2)
    raw = group.create_array("volumes/raw", shape=(2, 6, 8, 10), chunks=(1, 3, 4, 5), dtype="float32")
    data = np.arange(2 * 6 * 8 * 10, dtype=np.float32).reshape(2, 6, 8, 10)
    raw[:] = data
    raw.attrs.update({"resolution": [2, 1, 1], "offset": [4, 0, 0]})
    group.create_array("volumes/gt_labels", shape=(6, 8, 10), chunks=(3, 4, 5), dtype="uint16")
    return path, data


@pytest.mark.parametrize("text, store, key", [
    ("data/x.zarr/volumes/raw", "data/x.zarr", "volumes/raw"),
    ("x.zarr.zip/volumes/raw", "x.zarr.zip", "volumes/raw"),
    ("/abs/x.zip/volumes/raw/", "/abs/x.zip", "volumes/raw"),
    ("x.zarr", "x.zarr", ""),
    ("x.ZARR/raw", "x.ZARR", "raw"),
])
def test_parse_array_path(text, store, key):
    assert parse_array_path(text) == (type(parse_array_path(text)[0])(store), key)


def test_parse_array_path_without_suffix_finds_store_by_metadata(tmp_path):
    zarr.open_group(LocalStore(tmp_path / "plain"), mode="w").create_array("a", shape=(2,), dtype="u1")
    assert parse_array_path(tmp_path / "plain" / "a") == (tmp_path / "plain", "a")
    with pytest.raises(ConfigError, match=r"cannot tell where the zarr store ends in .*nostore/a"):
        parse_array_path(tmp_path / "nostore" / "a")


def test_v2_round_trip_and_original_attributes(v2_store):
    path, data = v2_store
    arr = open_array(f"{path}/volumes/raw")
    assert arr.metadata.zarr_format == 2
    np.testing.assert_array_equal(read_box(arr, Box((1, 2, 3), (4, 7, 9))), data[:, 1:4, 2:7, 3:9])
    np.testing.assert_array_equal(read_box(arr, Box((0, 0, 0), (6, 8, 10)), channels=1), data[1])
    np.testing.assert_array_equal(read_box(arr, Box((0, 0, 0), (1, 1, 2)), channels=[1, 0]),
                                  data[[1, 0], :1, :1, :2])
    assert voxel_size_of(arr) == (2.0, 1.0, 1.0) and offset_of(arr) == (4.0, 0.0, 0.0)
    assert volumes.spatial_shape(f"{path}/volumes/raw") == (6, 8, 10)
    check_array(arr, "raw", ndim=4, channels=2, dtypes=[np.floating])


def test_v3_round_trip_via_zarr_api(tmp_path):
    path = tmp_path / "v3.zarr"
    arr = zarr.create_array(LocalStore(path), name="pred/fg", shape=(5, 7), chunks=(2, 3), dtype="u1")
    arr[:] = np.arange(35, dtype=np.uint8).reshape(5, 7)
    opened = open_array(f"{path}/pred/fg")
    assert opened.metadata.zarr_format == 3 and voxel_size_of(opened) == (1.0, 1.0)
    np.testing.assert_array_equal(read_box(opened, Box((1, 1), (5, 7))), arr[1:5, 1:7])


def test_zip_store_read(tmp_path):
    path = tmp_path / "packed.zarr.zip"
    store = ZipStore(path, mode="w")
    arr = zarr.create_array(store, name="volumes/raw", shape=(4, 6), chunks=(2, 3), dtype="i2")
    arr[:] = np.arange(24, dtype=np.int16).reshape(4, 6)
    store.close()
    opened = open_array(f"{path}/volumes/raw")
    expected = np.arange(24).reshape(4, 6)[1:3, 2:6]
    np.testing.assert_array_equal(read_box(opened, Box((1, 2), (3, 6))), expected)
    opened.store.close()
    with pytest.raises(InputDataError, match=r"no array 'volumes/rw' in .*packed\.zarr\.zip; did you mean "
                                             r"'volumes/raw'\?"):
        open_array(f"{path}/volumes/rw")
    with pytest.raises(StorageError, match=r"packed\.zarr\.zip is a zip store"):
        open_array(f"{path}/volumes/raw", mode="r+")
    with pytest.raises(StorageError, match=r"zip store or another file; write outputs to a \.zarr"):
        prepare_array(f"{path}/out", shape=(2,), chunks=(2,), dtype="u1", axes="x")


def test_open_array_errors_name_path_and_key(v2_store, tmp_path):
    path, _ = v2_store
    with pytest.raises(InputDataError, match=r"zarr store .*missing\.zarr does not exist"):
        open_array(tmp_path / "missing.zarr" / "volumes" / "raw")
    with pytest.raises(InputDataError, match=r"no array 'volumes/rwa' in .*sample\.zarr; did you mean "
                                             r"'volumes/raw'\? arrays there: volumes/gt_labels, volumes/raw"):
        open_array(f"{path}/volumes/rwa")
    with pytest.raises(InputDataError, match=r"'volumes' in .*sample\.zarr is a group, not an array; "
                                             r"name one of its arrays: volumes/gt_labels, volumes/raw"):
        open_array(f"{path}/volumes")
    (tmp_path / "broken.zip").write_bytes(b"not a zip")
    with pytest.raises(InputDataError, match=r"broken\.zip is a file but not a readable zip store"):
        open_array(tmp_path / "broken.zip" / "raw")


@pytest.mark.parametrize("kwargs, match", [
    (dict(ndim=4), r"raw \(volumes/gt_labels in .*sample\.zarr\) has 3 dimensions \(shape \(6, 8, 10\)\); "
                   r"expected 4 \(C, Z, Y, X\); for single-channel data add a leading channel axis"),
    (dict(ndim=(2, 5)), r"expected 2 \(Y, X\) or 5 \(T, C, Z, Y, X\)$"),
    (dict(channels=3), r"has 1 channel\(s\) .*expected 3"),
    (dict(dtypes=["uint8", np.floating]), r"has dtype uint16; expected one of uint8, floating"),
])
def test_check_array_messages(v2_store, kwargs, match):
    path, _ = v2_store
    with pytest.raises(InputDataError, match=match):
        check_array(open_array(f"{path}/volumes/gt_labels"), "raw", **kwargs)


def test_prepare_image_writes_ome_zarr_0_5(tmp_path):
    arr = prepare_array(tmp_path / "out.zarr" / "pred" / "fg", shape=(3, 4, 16, 16), chunks=(3, 4, 8, 8),
                        dtype="u1", voxel_size=(2.0, 0.5, 0.5), offset=(8.0, 1.0, 0.0),
                        unit="micrometer", attrs={"ppp_dist": {"stage": "predict"}})
    assert arr.metadata.dimension_names == ("c", "z", "y", "x")
    assert arr.compressors[0].cname.value == "zstd" and arr.compressors[0].clevel == 3
    ome = _attrs(tmp_path / "out.zarr" / "pred" / "zarr.json")["ome"]
    assert ome["version"] == "0.5"
    (ms,) = ome["multiscales"]
    assert [(a["name"], a["type"]) for a in ms["axes"]] == [("c", "channel"), ("z", "space"),
                                                            ("y", "space"), ("x", "space")]
    assert ms["axes"][1]["unit"] == "micrometer"
    (ds,) = ms["datasets"]
    assert ds["path"] == "fg"
    assert ds["coordinateTransformations"] == [{"type": "scale", "scale": [1.0, 2.0, 0.5, 0.5]},
                                               {"type": "translation", "translation": [0.0, 8.0, 1.0, 0.0]}]
    assert voxel_size_of(arr) == (2.0, 0.5, 0.5) and offset_of(arr) == (8.0, 1.0, 0.0)
    assert arr.attrs["ppp_dist"] == {"stage": "predict"}


def test_prepare_labels_writes_image_label_and_reads_back_from_ome(tmp_path):
    arr = prepare_array(tmp_path / "out.zarr" / "instances" / "s0", shape=(4, 16, 16), chunks=(4, 8, 8),
                        dtype="u4", axes="zyx", voxel_size=(3, 1, 1), kind="labels")
    ome = _attrs(tmp_path / "out.zarr" / "instances" / "zarr.json")["ome"]
    assert ome["image-label"]["colors"][0]["label-value"] == 0
    assert ome["multiscales"][0]["datasets"][0]["coordinateTransformations"][0]["scale"] == [3.0, 1.0, 1.0]
    for key in ("voxel_size", "resolution", "offset"):  # OME metadata alone is enough to read back
        del arr.attrs[key]
    assert voxel_size_of(open_array(tmp_path / "out.zarr" / "instances" / "s0")) == (3.0, 1.0, 1.0)
    with pytest.raises(ValueError, match="labels need an integer dtype"):
        prepare_array(tmp_path / "out.zarr" / "bad", shape=(4,), chunks=(4,), dtype="f4", axes="x",
                      kind="labels")


def test_prepare_in_v2_store_writes_v2_and_ome_0_4(v2_store):
    path, _ = v2_store
    arr = prepare_array(f"{path}/volumes/fg", shape=(6, 8, 10), chunks=(3, 4, 5), dtype="u1", axes="zyx")
    assert arr.metadata.zarr_format == 2
    multiscales = json.loads((path / "volumes" / ".zattrs").read_text())["multiscales"]
    assert multiscales[0]["version"] == "0.4" and multiscales[0]["datasets"][0]["path"] == "fg"


def test_prepare_reuses_matching_and_lists_every_difference(tmp_path):
    text = f"{tmp_path}/out.zarr/volumes/fg"
    first = prepare_array(text, shape=(2, 8, 8), chunks=(2, 4, 4), dtype="u1", axes="cyx")
    write_box(first, Box((0, 0), (4, 4)), np.full((2, 4, 4), 7, np.uint8))
    again = prepare_array(text, shape=(2, 8, 8), chunks=(2, 4, 4), dtype="u1", axes="cyx")
    assert read_box(again, Box((0, 0), (4, 4))).min() == 7  # data kept
    with pytest.raises(StorageError, match=r"volumes/fg in .*out\.zarr already exists with a different "
                                           r"layout: "
                                           r"shape is \(2, 8, 8\) but \(2, 8, 9\) was requested; chunks is "
                                           r"\(2, 4, 4\) but \(2, 2, 4\) was requested; dtype is uint8 but "
                                           r"uint16 was requested; pass --set general.overwrite=true to replace it"):
        prepare_array(text, shape=(2, 8, 9), chunks=(2, 2, 4), dtype="u2", axes="cyx")
    replaced = prepare_array(text, shape=(2, 8, 9), chunks=(2, 2, 4), dtype="u2", axes="cyx", overwrite=True)
    assert replaced.shape == (2, 8, 9) and read_box(replaced, Box((0, 0), (4, 4))).max() == 0
    with pytest.raises(StorageError, match=r"'volumes' in .*out\.zarr is a group"):
        prepare_array(f"{tmp_path}/out.zarr/volumes", shape=(2,), chunks=(2,), dtype="u1", axes="x")


def test_unwritable_output_location(tmp_path):
    (tmp_path / "afile").write_text("x")
    with pytest.raises(StorageError, match=r"cannot create output .*afile/o\.zarr/a: .*afile is a file"):
        prepare_array(tmp_path / "afile" / "o.zarr" / "a", shape=(2,), chunks=(2,), dtype="u1", axes="x")


def test_read_only_directory(tmp_path):
    """Run as an unprivileged user (root ignores permissions), in a real subprocess."""
    ro = tmp_path / "ro"
    ro.mkdir()
    ro.chmod(0o555)
    code = ("from ppp_dist.io.volumes import prepare_array\n"
            "from ppp_dist.errors import StorageError\n"
            "try:\n"
            f"    prepare_array({str(ro / 'o.zarr' / 'a')!r}, shape=(2,), chunks=(2,), dtype='u1', axes='x')\n"
            "except StorageError as err:\n"
            "    print(err)\n")
    command = [sys.executable, "-c", code]
    opened: dict[Path, int] = {}
    if os.geteuid() == 0:
        command = ["setpriv", "--reuid=nobody", "--regid=nogroup", "--clear-groups"] + command
        # the other user must reach the folder, the checkout and the interpreter (a clone may sit in a
        # private mkdtemp folder); the modes are put back afterwards
        repo = Path(__file__).resolve().parents[2]
        for start in (tmp_path, repo, Path(sys.executable).resolve().parent):
            for folder in [start, *start.parents][:-1]:
                if folder not in opened:
                    opened[folder] = folder.stat().st_mode
                    folder.chmod(opened[folder] | 0o005)
    try:
        run = subprocess.run(command, capture_output=True, text=True, timeout=60)
    finally:
        ro.chmod(0o755)
        for folder, mode in opened.items():
            folder.chmod(mode)
    out = run.stdout + run.stderr
    assert re.search(r"cannot write output .*ro/o\.zarr/a: .*ro is not writable", out), out


def test_read_box_padded_at_borders(tmp_path):
    arr = prepare_array(tmp_path / "o.zarr" / "x", shape=(2, 4, 5), chunks=(2, 2, 5), dtype="i4", axes="cyx")
    data = np.arange(40, dtype=np.int32).reshape(2, 4, 5)
    write_box(arr, Box((0, 0), (4, 5)), data)
    out = read_box_padded(arr, Box((-2, 3), (2, 8)), pad_value=-1)
    expected = np.full((2, 4, 5), -1, np.int32)
    expected[:, 2:4, 0:2] = data[:, 0:2, 3:5]
    np.testing.assert_array_equal(out, expected)
    assert read_box_padded(arr, Box((10, 10), (12, 12)), channels=0).shape == (2, 2)
    # padding restores the unclipped read box of every block
    for spec in tile((4, 5), (2, 3), 2):
        padded = read_box_padded(arr, spec.read_box_unclipped)
        np.testing.assert_array_equal(padded[(Ellipsis, *spec.read_box.relative_to(spec.read_box_unclipped))],
                                      data[(Ellipsis, *spec.read_box.slices)])


def test_write_box_refuses_partial_chunks_and_bad_shapes(tmp_path):
    arr = prepare_array(tmp_path / "o.zarr" / "x", shape=(6, 10), chunks=(3, 4), dtype="u1", axes="yx")
    write_box(arr, Box((3, 8), (6, 10)), np.ones((3, 2), np.uint8))  # ends at the volume end: fine
    with pytest.raises(StorageError, match=r"writing box \[0:3, 0:6\] into x in .*o\.zarr would write part "
                                           r"of a chunk of \(3, 4\)"):
        write_box(arr, Box((0, 0), (3, 6)), np.ones((3, 6), np.uint8))
    write_box(arr, Box((0, 0), (3, 6)), np.ones((3, 6), np.uint8), check_alignment=False)
    with pytest.raises(ValueError, match=r"does not fit box"):
        write_box(arr, Box((0, 0), (3, 4)), np.ones((3, 5), np.uint8))
    with pytest.raises(ValueError, match=r"leaves x in"):
        read_box(arr, Box((0, 0), (7, 4)))


def test_block_alignment_uses_shards_when_sharded(tmp_path):
    arr = prepare_array(tmp_path / "o.zarr" / "s", shape=(64, 64), chunks=(8, 8), shards=(32, 32),
                        dtype="u1", axes="yx")
    check_block_alignment(arr, (32, 64))
    with pytest.raises(StorageError, match=r"s in .*o\.zarr: write boxes of block shape \(16, 16\) are "
                                           r"not whole shards of \(32, 32\)"):
        check_block_alignment(arr, (16, 16))


@pytest.mark.parametrize("volume, block, channels, expected", [
    ((100, 1000, 1000), (256, 256, 256), None, (100, 128, 128)),
    ((1, 1000, 1000), (64, 512, 512), 3, (1, 512, 512)),
    ((512, 512, 512), (96, 96, 96), 8, (48, 48, 96)),
])
def test_choose_chunks_divides_blocks(volume, block, channels, expected):
    chunks = choose_chunks(volume, block, channels)
    assert chunks == expected
    check_chunk_alignment(block, chunks, volume, "x")


def test_bare_array_at_store_root(tmp_path):
    path = tmp_path / "bare.zarr"
    arr = zarr.create_array(LocalStore(path), shape=(3, 4), chunks=(3, 4), dtype="u1")
    arr[:] = 5
    assert read_box(open_array(path), Box((0, 0), (3, 4))).sum() == 60
    with pytest.raises(InputDataError,
                       match=r"no array 'foo' in .*bare\.zarr; arrays there: \(the store root\)"):
        open_array(path / "foo")
    with pytest.raises(StorageError, match=r"a parent of 'sub' in .*bare\.zarr is an array"):
        prepare_array(path / "sub", shape=(2,), chunks=(2,), dtype="u1", axes="x")
    (tmp_path / "empty.zarr").mkdir()
    with pytest.raises(InputDataError, match=r"no zarr array or group at the root of .*empty\.zarr"):
        open_array(tmp_path / "empty.zarr")
