"""TIFF and PNG images as ``--input`` of predict / infer: converted into the experiment folder first.

``ppp-dist infer --input image.tif`` (or ``.tiff``, ``.png``; 2D or 3D, one channel or several along the
first axis as ``scripts/convert_to_zarr.py`` reads them) converts the image with
:func:`ppp_dist.tasks.convert.convert_sample`, the code of ``convert_to_zarr``, into ``<experiment>/input.zarr``,
and the tasks read ``input.zarr/volumes/raw``. Before anything is written the image is read once to check it
(:func:`read_for_check`).
"""

from __future__ import annotations

from pathlib import Path
from typing import TypeGuard

import numpy as np

from ppp_dist.tasks.convert import IMAGE_SUFFIXES, RAW_KEY

INPUT_NAME = "input.zarr"


def is_image(spec: str | None) -> TypeGuard[str]:
    """True for a path ending in .tif, .tiff or .png (any case)."""
    return bool(spec) and Path(str(spec)).suffix.lower() in IMAGE_SUFFIXES


def read_for_check(spec: str) -> np.ndarray:
    """The image as the (C, Z, Y, X) array the conversion writes (InputDataError in one sentence)."""
    from ppp_dist.tasks.convert import read_image

    return read_image(spec)


def convert_input(spec: str, exp_dir: str | Path) -> str:
    """Convert the image ``spec`` into ``exp_dir/input.zarr``; return the raw array spec to predict."""
    from ppp_dist.tasks.convert import convert_sample

    out = Path(exp_dir) / INPUT_NAME
    convert_sample(spec, out, overwrite=True)
    return f"{out}/{RAW_KEY}"


__all__ = ["INPUT_NAME", "convert_input", "is_image", "read_for_check"]
