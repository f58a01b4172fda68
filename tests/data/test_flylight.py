"""The packaged FlyLight sample: file, loader, normalisation, ground-truth numbers (ppp_reference §8)."""

import zipfile

import numpy as np
import pytest

from ppp_dist.data import Sample, instance_ids, instance_masks
from ppp_dist.data.flylight import FLYLIGHT_GROUP, flylight_path, load_flylight
from ppp_dist.errors import InputDataError
from ppp_dist.ops.patches import numinst_target


@pytest.fixture(scope="module")
def sample() -> Sample:
    return load_flylight()


def test_packaged_file_is_a_small_zip_with_attribution():
    path = flylight_path()
    assert zipfile.is_zipfile(path)
    assert 300_000 < path.stat().st_size < 500_000
    attribution = (path.parent / "ATTRIBUTION.md").read_text()
    assert "Kainmueller-Lab/PatchPerPix" in attribution and "MIT" in attribution


def test_raw_is_normalised_float32(sample):
    assert sample.raw.shape == (3, 50, 50, 50)
    assert sample.raw.dtype == np.float32
    assert sample.raw.min() >= 0.0 and sample.raw.max() <= 1.0
    assert sample.raw.max() == 1.0  # the channel maxima (3287, 1855, 1750) exceed the 1500 clip


def test_gt_is_three_overlapping_instance_channels(sample):
    gt = sample.instances
    assert gt.shape == (3, 50, 50, 50) and gt.dtype == np.uint16
    for c in range(3):
        assert set(np.unique(gt[c]).tolist()) == {0, c + 1}
    assert instance_ids(gt).tolist() == [1, 2, 3]
    assert [int(m.sum()) for _, m in instance_masks(gt)] == [3765, 6193, 14246]


def test_overlap_counts(sample):
    counts = np.bincount(numinst_target(sample.instances, max_num_inst=3).ravel(), minlength=4)
    assert counts.tolist() == [103_181, 19_504, 2_245, 70]
    clamped = np.bincount(numinst_target(sample.instances).ravel())
    assert clamped.tolist() == [103_181, 19_504, 2_245 + 70]


def test_raw_matches_eccv_normalisation(sample):
    import zarr

    store = zarr.storage.ZipStore(flylight_path(), mode="r")
    try:
        raw = zarr.open_group(store, mode="r", path=FLYLIGHT_GROUP)["volumes/raw"][...]
    finally:
        store.close()
    expected = np.clip(raw.astype(np.float32), 0, 1500) / np.float32(1500)
    np.testing.assert_array_equal(sample.raw, expected)


def test_unzipped_folder_loads_the_same(tmp_path, sample):
    with zipfile.ZipFile(flylight_path()) as archive:
        archive.extractall(tmp_path)
    folder = load_flylight(tmp_path / FLYLIGHT_GROUP)
    np.testing.assert_array_equal(folder.raw, sample.raw)
    np.testing.assert_array_equal(folder.instances, sample.instances)


def test_missing_or_wrong_file_says_which(tmp_path):
    with pytest.raises(InputDataError, match="not found"):
        load_flylight(tmp_path / "nope.zip")
    bogus = tmp_path / "bogus.zip"
    bogus.write_text("not a zip")
    with pytest.raises(InputDataError, match="not a zip"):
        load_flylight(bogus)
    empty = tmp_path / "empty.zip"
    with zipfile.ZipFile(empty, "w") as archive:
        archive.writestr("readme.txt", "no zarr here")
    with pytest.raises(InputDataError, match="no zarr group"):
        load_flylight(empty)
