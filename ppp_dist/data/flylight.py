"""The FlyLight sample crop shipped with the original PatchPerPix repository.

The file ``sample/flylight_JRC_SS05008-20160318_24_B2_crop.zarr.zip`` (382 kB; see
``sample/ATTRIBUTION.md``) is a zip of a zarr v2 group ``JRC_SS05008-20160318_24_B2_crop.zarr`` with

* ``volumes/raw`` — (3, 50, 50, 50) uint16, the three colour channels of an MCFO light-microscopy crop;
* ``volumes/gt_instances`` — (3, 50, 50, 50) uint8, one neuron per channel, channel i holds {0, i + 1};
  the neurons overlap (per-voxel count 0: 103,181; 1: 19,504; 2: 2,245; 3: 70 voxels).

:func:`load_flylight` returns it as a :class:`~ppp_dist.data.Sample`, with raw normalised like the ECCV
code (clip to [0, 1500], divide by 1500).
"""

from __future__ import annotations

import importlib.resources
import logging
import os
import zipfile
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from ppp_dist.data import Sample
from ppp_dist.errors import InputDataError

if TYPE_CHECKING:
    import zarr

logger = logging.getLogger(__name__)

FLYLIGHT_FILENAME = "flylight_JRC_SS05008-20160318_24_B2_crop.zarr.zip"
#: Group path inside the zip (the zip holds a folder, not a bare zarr root).
FLYLIGHT_GROUP = "JRC_SS05008-20160318_24_B2_crop.zarr"
RAW_KEY = "volumes/raw"
GT_KEY = "volumes/gt_instances"
#: ECCV normalisation of the uint16 raw: clip to [0, RAW_CLIP], divide by RAW_CLIP.
RAW_CLIP = 1500.0


def flylight_path() -> Path:
    """Path of the packaged FlyLight sample zip.

    Returns
    -------
    Path
        ``.../ppp_dist/data/sample/flylight_JRC_SS05008-20160318_24_B2_crop.zarr.zip``.

    Raises
    ------
    InputDataError
        If the package was installed without its package data.
    """
    resource = importlib.resources.files("ppp_dist.data").joinpath("sample", FLYLIGHT_FILENAME)
    path = Path(os.fspath(resource))  # type: ignore[call-overload]  # regular (non-zipped) install
    if not path.is_file():
        raise InputDataError(f"the FlyLight sample {path} is missing; the package was installed "
                             f"without its data files (reinstall ppp_dist from a full checkout)")
    return path


def normalize_flylight_raw(raw: np.ndarray, clip: float = RAW_CLIP) -> np.ndarray:
    """Normalise raw intensities like the ECCV PatchPerPix code.

    Parameters
    ----------
    raw
        (C, Z, Y, X) any real dtype (the sample is uint16).
    clip
        Intensities are clipped to [0, clip] and divided by it.

    Returns
    -------
    np.ndarray
        (C, Z, Y, X) float32 in [0, 1].
    """
    out = np.clip(raw.astype(np.float32), 0.0, clip)
    out /= np.float32(clip)
    return out


def load_flylight(path: str | os.PathLike[str] | None = None) -> Sample:
    """Load the FlyLight sample crop as a :class:`~ppp_dist.data.Sample`.

    Parameters
    ----------
    path
        A zip like the packaged one (zarr v2 group inside, at the zip root or in one top-level folder),
        or an unzipped ``.zarr`` folder; default :func:`flylight_path`.

    Returns
    -------
    Sample
        ``raw`` (3, 50, 50, 50) float32 in [0, 1] (clipped at 1500, divided by 1500);
        ``instances`` (3, 50, 50, 50) uint16, channel i holds the ids {0, i + 1}.

    Raises
    ------
    InputDataError
        If the file is missing or lacks ``volumes/raw`` or ``volumes/gt_instances``.
    """
    import zarr  # local import: keeps `import ppp_dist.data` free of zarr

    path = flylight_path() if path is None else Path(path)
    if not path.exists():
        raise InputDataError(f"FlyLight sample not found: {path}")
    store: zarr.storage.ZipStore | zarr.storage.LocalStore
    if path.is_file():
        if not zipfile.is_zipfile(path):
            raise InputDataError(f"{path} is not a zip file; pass a .zarr.zip or a .zarr folder")
        store = zarr.storage.ZipStore(path, mode="r")
        group_path = _group_in_zip(path)
    else:
        store = zarr.storage.LocalStore(path, read_only=True)
        group_path = ""
    try:
        group = zarr.open_group(store, mode="r", path=group_path)
        try:
            raw, gt = _read_array(group, RAW_KEY), _read_array(group, GT_KEY)
        except KeyError as err:
            raise InputDataError(f"{path}: expected arrays {RAW_KEY!r} and {GT_KEY!r} in group "
                                 f"{group_path or '/'!r}; missing {err}") from err
    finally:
        store.close()
    if raw.ndim != 4 or gt.ndim != 4 or raw.shape[1:] != gt.shape[1:]:
        raise InputDataError(f"{path}: expected (C, Z, Y, X) raw and (K, Z, Y, X) gt with equal "
                             f"spatial shapes, got {raw.shape} and {gt.shape}")
    if gt.max(initial=0) > np.iinfo(np.uint16).max or gt.min(initial=0) < 0:
        raise InputDataError(f"{path}: gt ids must lie in [0, 65535]")
    logger.debug("loaded FlyLight sample %s: raw %s %s, gt %s %s", path, raw.shape, raw.dtype,
                 gt.shape, gt.dtype)
    return Sample(raw=normalize_flylight_raw(raw), instances=gt.astype(np.uint16),
                  name=f"flylight {path.name}")


def _read_array(group: zarr.Group, key: str) -> np.ndarray:
    """The whole array ``key`` of ``group``; KeyError if there is none (or a group is there instead)."""
    import zarr

    node = group[key]
    if not isinstance(node, zarr.Array):
        raise KeyError(key)
    return np.asarray(node[...])


def _group_in_zip(path: Path) -> str:
    """Folder inside the zip holding the zarr group: '' for the root, else the one top-level folder."""
    with zipfile.ZipFile(path) as archive:
        names = archive.namelist()
    if ".zgroup" in names or "zarr.json" in names:
        return ""
    for name in names:
        parts = name.split("/")
        if len(parts) == 2 and parts[1] in (".zgroup", "zarr.json"):
            return parts[0]
    raise InputDataError(f"{path}: no zarr group (.zgroup or zarr.json) at the zip root or in a "
                         f"top-level folder")
