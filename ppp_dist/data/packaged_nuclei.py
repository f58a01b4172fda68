"""Nuclei images with labels that a registry package ships, split into train / val / test zarr samples.

The ``stardist`` package (BSD-3-Clause, a test dependency of ppp_dist) bundles in ``stardist/data/images``:

* ``img2d.tif`` / ``mask2d.tif``: a real 512 x 512 fluorescence image of 125 nuclei from the 2018 Data Science
  Bowl (Caicedo et al., Nature Methods 16, 2019; the Broad Bioimage Benchmark Collection distributes the
  DSB2018 images as BBBC038 and lists them as CC0), uint16 with values 0 to 235, and its label image;
* ``img3d.tif`` / ``mask3d.tif``: a 31 x 61 x 57 volume of *synthetic* nuclei (stardist's docstring says so)
  with labels; no registry package we found ships real 3D nuclei with labels.

The image is cut into disjoint regions (:data:`SPLITS_2D`, :data:`SPLITS_3D`): ``train``, ``val`` (for the
``[validation.grid]`` sweep) and ``test``, which nothing is chosen on. Each region is written as a TIFF pair
and converted with :func:`ppp_dist.tasks.convert.convert_sample` (the code of ``scripts/convert_to_zarr.py``).
"""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np

from ppp_dist.errors import InputDataError

logger = logging.getLogger(__name__)

# (Y, X) regions of the 512 x 512 DSB2018 image: 64, 29 and 40 nuclei (cut ones included). The test region
# is the quadrant where nuclei touch most (connected components of its true foreground score avS 0.46, of the
# other quadrants 0.74 to 0.91), chosen on the labels alone before any model was scored on it: separating
# touching nuclei is what an instance segmentation must do better than connected components.
SPLITS_2D = {"train": (slice(0, 256), slice(0, 512)), "val": (slice(256, 512), slice(256, 512)),
             "test": (slice(256, 512), slice(0, 256))}
# X ranges of the 31 x 61 x 57 synthetic volume
SPLITS_3D = {"train": slice(0, 30), "val": slice(30, 43), "test": slice(43, 57)}


def stardist_images() -> Path:
    """The folder of stardist's bundled images; InputDataError naming the install if stardist is missing."""
    try:
        import stardist
    except ImportError as err:
        raise InputDataError("the packaged nuclei come with the stardist package; install it with "
                             "pip install stardist (or pip install -e '.[dev]')") from err
    folder = Path(stardist.__file__).parent / "data" / "images"
    if not (folder / "img2d.tif").is_file():
        raise InputDataError(f"{folder} lacks img2d.tif; reinstall stardist")
    return folder


def _write(raw: np.ndarray, labels: np.ndarray, out: Path, name: str) -> Path:
    import tifffile

    from ppp_dist.tasks.convert import convert_sample

    tif = out / "tif"
    tif.mkdir(parents=True, exist_ok=True)
    tifffile.imwrite(tif / f"{name}_raw.tif", np.ascontiguousarray(raw))
    tifffile.imwrite(tif / f"{name}_labels.tif", np.ascontiguousarray(labels))
    path = out / f"{name}.zarr"
    convert_sample(str(tif / f"{name}_raw.tif"), path, labels=str(tif / f"{name}_labels.tif"), overwrite=True)
    return path


def write_nuclei2d(out_dir: str | Path) -> dict[str, Path]:
    """Write ``out_dir/{train,val,test}/dsb2018.zarr`` (raw ``volumes/raw``, labels ``volumes/gt_instances``);
    return split -> sample path."""
    import tifffile

    folder = stardist_images()
    img, mask = tifffile.imread(folder / "img2d.tif"), tifffile.imread(folder / "mask2d.tif")
    out = Path(out_dir)
    return {split: _write(img[ys, xs], mask[ys, xs], out / split, "dsb2018")
            for split, (ys, xs) in SPLITS_2D.items()}


def write_nuclei3d(out_dir: str | Path) -> dict[str, Path]:
    """Write ``out_dir/{train,val,test}/synthetic3d.zarr``; return split -> sample path."""
    import tifffile

    folder = stardist_images()
    img, mask = tifffile.imread(folder / "img3d.tif"), tifffile.imread(folder / "mask3d.tif")
    out = Path(out_dir)
    return {split: _write(img[:, :, xs], mask[:, :, xs], out / split, "synthetic3d")
            for split, xs in SPLITS_3D.items()}


__all__ = ["SPLITS_2D", "SPLITS_3D", "stardist_images", "write_nuclei2d", "write_nuclei3d"]
