"""The mnfinder data source: mask decoding, the wheel read as a zip, the download's errors.

All but the last test build a small fake wheel and need no network. The last one reads the real wheel
(68 MB from PyPI, or the copy in ``$PPP_DIST_CACHE`` / ``~/.cache/ppp_dist``): it is slow and skips when
the registry cannot be reached (CI sets PPP_DIST_RUN_SLOW=1 and has the registry)."""

from __future__ import annotations

import io
import os
import subprocess
import zipfile

import numpy as np
import pytest

from ppp_dist.data import mnfinder_nuclei
from ppp_dist.data.mnfinder_nuclei import decode_mask, fetch_wheel, read_pairs, write_mnfinder
from ppp_dist.errors import InputDataError


def _rgba(ids: np.ndarray, red: np.ndarray | None = None) -> np.ndarray:
    rgba = np.zeros((*ids.shape, 4), np.uint8)
    rgba[..., 0] = 255 * (ids > 0) if red is None else red
    rgba[..., 1] = 255 * (ids > 0)
    rgba[..., 2] = ids
    rgba[..., 3] = 255
    return rgba


def _ids() -> np.ndarray:
    ids = np.zeros((20, 30), np.uint8)
    ids[1:4, 1:4] = 5  # id 5: two separate blobs
    ids[10:14, 20:25] = 5
    ids[6:9, 6:9] = 7
    ids[15:18, 2:5] = 200
    return ids


def test_blue_channel_ids_are_split_into_connected_components_numbered_from_one():
    labels = decode_mask(_rgba(_ids()))
    assert labels.dtype == np.uint32 and labels.shape == (20, 30)
    assert sorted(np.unique(labels)) == [0, 1, 2, 3, 4]
    assert labels[2, 2] != labels[11, 21]  # the two blobs of id 5 are two instances
    assert len(np.unique(labels[1:4, 1:4])) == 1 and labels[7, 7] not in (labels[2, 2], labels[11, 21])
    assert (labels > 0).sum() == (_ids() > 0).sum()


def test_diagonal_touch_is_one_instance_and_foreground_without_an_id_becomes_instances():
    ids = np.zeros((10, 10), np.uint8)
    ids[2, 2] = ids[3, 3] = 9  # 8-connected
    red = 255 * (ids > 0).astype(np.uint8)
    red[6:8, 6:8] = 255  # foreground, blue 0
    labels = decode_mask(_rgba(ids, red))
    assert labels[2, 2] == labels[3, 3] > 0
    assert labels[6, 6] > 0 and labels[6, 6] != labels[2, 2] and labels.max() == 2


def test_a_mask_without_colour_channels_is_refused():
    with pytest.raises(InputDataError, match="nucleus mask"):
        decode_mask(np.zeros((5, 5), np.uint8))


def _fake_wheel(path, shape=(24, 32)) -> None:
    import tifffile
    from PIL import Image

    rng = np.random.default_rng(0)
    with zipfile.ZipFile(path, "w") as archive:
        for folder, group, name, dtype in [("training-data", "2022-03-18_RPE1", "3", np.uint16),
                                           ("training-data", "2023-05-31_misc", "10", np.uint8),
                                           ("validation-data", "2022-10-14_U2OS", "1", np.uint16),
                                           ("test-data", "2023-05-31_misc", "1", np.uint16),  # excluded
                                           ("test-data", "2023-05-31_misc", "HFF s5", np.uint16)]:
            buffer = io.BytesIO()
            tifffile.imwrite(buffer, rng.integers(0, 200, shape).astype(dtype))
            archive.writestr(f"mnfinder/{folder}/{group}/images/{name}.tif", buffer.getvalue())
            buffer = io.BytesIO()
            Image.fromarray(_rgba(np.pad(_ids(), ((0, 4), (0, 2))))).save(buffer, format="PNG")
            archive.writestr(f"mnfinder/{folder}/{group}/nucleus_masks/{name}.png", buffer.getvalue())
        archive.writestr("mnfinder/mnfinder.py", "raise SystemExit('never run')\n")


def test_pairs_are_read_from_the_zip_by_split_without_the_duplicate_test_image(tmp_path):
    _fake_wheel(tmp_path / "w.whl")
    pairs = read_pairs(tmp_path / "w.whl")
    assert {split: [name for name, _, _ in items] for split, items in pairs.items()} == {
        "train": ["2022-03-18_RPE1/3", "2023-05-31_misc/10"], "val": ["2022-10-14_U2OS/1"],
        "test": ["2023-05-31_misc/HFF s5"]}
    name, image, labels = pairs["train"][1]
    assert image.dtype == np.uint8 and image.shape == labels.shape == (24, 32) and labels.max() == 4


def test_samples_are_written_through_the_converter_and_reused(tmp_path, monkeypatch):
    from ppp_dist.io.volumes import open_array

    _fake_wheel(tmp_path / "w.whl")
    calls = []
    monkeypatch.setattr(mnfinder_nuclei, "fetch_wheel", lambda cache: calls.append(cache) or tmp_path / "w.whl")
    samples = write_mnfinder(tmp_path / "out", cache=tmp_path)
    assert [p.name for p in samples["test"]] == ["2023-05-31_misc__HFF_s5.zarr"]
    raw = open_array(f"{samples['train'][0]}/volumes/raw")
    gt = open_array(f"{samples['train'][0]}/volumes/gt_instances")[...]
    assert raw.dtype == np.uint16 and raw.shape == (1, 1, 24, 32) and gt.max() == 4
    assert write_mnfinder(tmp_path / "out", cache=tmp_path) == samples and len(calls) == 1


def test_a_wheel_with_another_checksum_or_a_failed_download_is_one_sentence(tmp_path, monkeypatch):
    (tmp_path / mnfinder_nuclei.WHEEL).write_bytes(b"not the wheel")
    with pytest.raises(InputDataError, match="sha256 differs"):
        fetch_wheel(tmp_path)
    failed = subprocess.CompletedProcess([], 1, "", "ERROR: No matching distribution found for mnfinder==1.2.3\n")
    monkeypatch.setattr(subprocess, "run", lambda *a, **k: failed)
    with pytest.raises(InputDataError, match="could not download mnfinder 1.2.3 with pip \\(ERROR: No matching"):
        fetch_wheel(tmp_path / "empty")


@pytest.mark.slow
@pytest.mark.skipif(os.environ.get("PPP_DIST_RUN_SLOW") != "1", reason="slow; set PPP_DIST_RUN_SLOW=1 to run")
def test_the_real_wheel_has_the_documented_images_and_nuclei():
    try:
        wheel = fetch_wheel()
    except InputDataError as err:
        pytest.skip(f"the registry is not reachable: {err}")
    pairs = read_pairs(wheel)
    assert {split: len(items) for split, items in pairs.items()} == {"train": 30, "val": 3, "test": 15}
    nuclei = sum(int(labels.max()) for items in pairs.values() for _, _, labels in items)
    assert 3000 < nuclei < 3600
    assert {image.dtype for items in pairs.values() for _, image, _ in items} == {np.dtype(np.uint8),
                                                                                  np.dtype(np.uint16)}
