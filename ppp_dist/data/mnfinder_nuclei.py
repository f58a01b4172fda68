"""Real 2D nuclei with instance labels from the ``mnfinder`` package, as train / val / test zarr samples.

Source: the PyPI package ``mnfinder`` 1.2.3 (https://pypi.org/project/mnfinder/, micronucleus finder of the
Hatch lab, University of Washington), MIT licence ("Copyright 2023 Lucian DiPeso", the ``LICENSE.py`` in
the wheel's ``dist-info``); the images are the authors' own and are shipped inside the MIT-licensed package
with no separate data licence. The wheel ``mnfinder-1.2.3-py3-none-any.whl`` (68 MB, sha256
:data:`WHEEL_SHA256`) holds under ``mnfinder/{training,validation,test}-data/<set>/`` 49 single-channel 2D
nuclear fluorescence images (DAPI, Hoechst or H2B; RPE1 and U2OS at 768 x 869 uint16, HeLa, HFF, MCC13 and
others at 512 x 512 or 1024 x 1024, uint8 or uint16) as ``images/<name>.tif`` with their nucleus labels as
``nucleus_masks/<name>.png``, about 3,200 nuclei.

:func:`fetch_wheel` downloads the wheel with ``pip download --no-deps --only-binary=:all:`` into a cache
folder (``~/.cache/ppp_dist`` unless given; mnfinder 1.2.3 declares ``Requires-Python >3.11``, so the
download names ``--python-version 3.12``; the version a 3.11 pip would pick, 1.0.1, has 20 of the pairs) and
checks its sha256. The wheel is only **read as a zip file**: nothing of it is installed or executed.

Labels (:func:`decode_mask`): the PNGs are RGBA; the **blue** channel holds the instance id and red > 0 the
foreground (as ``mnfinder.TrainingDataGenerator.get_full_mask`` reads them). Some ids cover several
separate blobs, and a few foreground blobs carry id 0 (red > 0, blue 0); every connected component
(8-connectivity) of every id, and of the id-0 foreground, becomes its own instance, numbered 1..N. Some bright
mitotic or apoptotic cells are not labelled at all: the labels are not exhaustive, which costs every method
the same false positives.

Splits: mnfinder's own ``training`` (30 images), ``validation`` (3) and ``test`` (16) folders, with one
change made on the data alone before any model was scored: the test image ``2023-05-31_misc/1.tif`` is
pixel for pixel the training image ``2022-05-26_RPE1/1.tif`` (with other masks), so it is left out of test
(:data:`EXCLUDED`). Each image is written with :func:`ppp_dist.data.packaged_nuclei._write`, i.e. a TIFF
pair converted by :func:`ppp_dist.tasks.convert.convert_sample` (the code of ``scripts/convert_to_zarr.py``), raw
values as stored (uint8 or uint16; ``[data] normalization = "percentile"`` maps each image to [0, 1]).
"""

from __future__ import annotations

import hashlib
import logging
import os
import re
import subprocess
import sys
import zipfile
from pathlib import Path

import numpy as np

from ppp_dist.errors import InputDataError

logger = logging.getLogger(__name__)

VERSION = "1.2.3"
WHEEL = f"mnfinder-{VERSION}-py3-none-any.whl"
WHEEL_SHA256 = "11b1f6aea9f40b4dd3cf6c3de30ef8d517a4833907b88b86ce2b7ab1f9dbce4a"
SPLITS = {"train": "training-data", "val": "validation-data", "test": "test-data"}
# (folder, set, name) left out: a test image identical to a training image
EXCLUDED = {("test-data", "2023-05-31_misc", "1")}
_PAIR = re.compile(r"^mnfinder/(training-data|validation-data|test-data)/([^/]+)/images/([^/]+)\.tif$")


def default_cache() -> Path:
    """``$PPP_DIST_CACHE`` or ``~/.cache/ppp_dist``."""
    return Path(os.environ.get("PPP_DIST_CACHE") or Path.home() / ".cache" / "ppp_dist")


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def fetch_wheel(cache: str | Path | None = None) -> Path:
    """The mnfinder wheel in ``cache`` (downloaded with pip on first use, sha256 checked)."""
    folder = Path(cache) if cache is not None else default_cache()
    wheel = folder / WHEEL
    if not wheel.is_file():
        folder.mkdir(parents=True, exist_ok=True)
        command = [sys.executable, "-m", "pip", "download", "--no-deps", "--only-binary=:all:",
                   "--python-version", "3.12", f"mnfinder=={VERSION}", "-d", str(folder)]
        logger.info("downloading mnfinder %s (68 MB) into %s", VERSION, folder)
        done = subprocess.run(command, capture_output=True, text=True)
        if done.returncode != 0 or not wheel.is_file():
            last = (done.stderr or done.stdout).strip().splitlines()[-1:] or ["no output"]
            raise InputDataError(f"could not download mnfinder {VERSION} with pip ({last[0]}); put {WHEEL} "
                                 f"into {folder} by hand or pass another cache folder")
    if _sha256(wheel) != WHEEL_SHA256:
        raise InputDataError(f"{wheel} is not the mnfinder {VERSION} wheel (sha256 differs); delete it and "
                             "run again")
    return wheel


def decode_mask(rgba: np.ndarray) -> np.ndarray:
    """Instance ids (Y, X) uint32 from an mnfinder nucleus mask (Y, X, 4): blue = id, red > 0 = foreground;
    every 8-connected component of every id (and of foreground with id 0) is one instance, numbered 1..N in
    the order of (id, component)."""
    from scipy import ndimage

    if rgba.ndim != 3 or rgba.shape[-1] < 3:
        raise InputDataError(f"an mnfinder nucleus mask is (Y, X, 3 or 4), got shape {rgba.shape}")
    ids = rgba[..., 2].astype(np.int64)
    ids[(ids == 0) & (rgba[..., 0] > 0)] = 256  # foreground without an id: its components are instances too
    out = np.zeros(ids.shape, np.uint32)
    structure = np.ones((3, 3), bool)
    count = 0
    for index, box in enumerate(ndimage.find_objects(ids)):
        if box is None:
            continue
        components, n = ndimage.label(ids[box] == index + 1, structure=structure)
        region = out[box]
        region[components > 0] = components[components > 0] + count
        count += n
    return out


def read_pairs(wheel: str | Path, splits: tuple[str, ...] = ("train", "val", "test")
               ) -> dict[str, list[tuple[str, np.ndarray, np.ndarray]]]:
    """split -> [(name "<set>/<image>", image (Y, X) uint8/uint16, labels (Y, X) uint32)] from the wheel,
    read as a zip (nothing in it is executed); :data:`EXCLUDED` left out."""
    import io

    import tifffile
    from PIL import Image

    folders = {SPLITS[s]: s for s in splits}
    pairs: dict[str, list[tuple[str, np.ndarray, np.ndarray]]] = {s: [] for s in splits}
    with zipfile.ZipFile(wheel) as archive:
        names = set(archive.namelist())
        for member in sorted(names):
            match = _PAIR.match(member)
            if not match or match.group(1) not in folders or match.groups() in EXCLUDED:
                continue
            folder, group, name = match.groups()
            mask_member = f"mnfinder/{folder}/{group}/nucleus_masks/{name}.png"
            if mask_member not in names:
                logger.warning("mnfinder: %s has no nucleus mask; skipped", member)
                continue
            image = tifffile.imread(io.BytesIO(archive.read(member)))
            rgba = np.asarray(Image.open(io.BytesIO(archive.read(mask_member))))
            if image.ndim != 2 or image.shape != rgba.shape[:2]:
                raise InputDataError(f"mnfinder {member}: image {image.shape} and mask {rgba.shape} differ")
            pairs[folders[folder]].append((f"{group}/{name}", image, decode_mask(rgba)))
    return pairs


def _file_name(name: str) -> str:
    return re.sub(r"[^A-Za-z0-9_.-]+", "_", name.replace("/", "__"))


def write_mnfinder(out_dir: str | Path, cache: str | Path | None = None) -> dict[str, list[Path]]:
    """Write ``out_dir/{train,val,test}/<set>__<image>.zarr`` (raw ``volumes/raw``, labels
    ``volumes/gt_instances``); return split -> sample paths. Existing samples are reused."""
    from ppp_dist.data.packaged_nuclei import _write

    out = Path(out_dir)
    done = out / "mnfinder.done"
    if done.is_file():
        listing = [line.split("\t") for line in done.read_text().splitlines() if line]
        if all(Path(path).is_dir() for _, path in listing):
            samples: dict[str, list[Path]] = {s: [] for s in SPLITS}
            for split, path in listing:
                samples[split].append(Path(path))
            return samples
    pairs = read_pairs(fetch_wheel(cache))
    samples = {split: [_write(image, labels, out / split, _file_name(name)) for name, image, labels in items]
               for split, items in pairs.items()}
    done.write_text("".join(f"{s}\t{p}\n" for s, paths in samples.items() for p in paths))
    return samples


__all__ = ["EXCLUDED", "SPLITS", "VERSION", "WHEEL", "WHEEL_SHA256", "decode_mask", "default_cache",
           "fetch_wheel", "read_pairs", "write_mnfinder"]
