"""Convert TIFF, PNG and HDF5 images into the zarr samples ppp_dist reads (pure I/O).

A sample is one zarr v3 store holding

* ``volumes/raw``: ``(C, Z, Y, X)`` raw intensities, dtype as read (``float32`` after ``gray``);
* ``volumes/gt_instances`` (optional): ``(K, Z, Y, X)`` instance ids, 0 = background. Either K = 1 (a flat
  label image) or one instance per channel (a folder of per-instance binary masks, as BBBC010 ships
  them), where a voxel may be non-zero in several channels (overlaps are kept).

2D images are Z = 1. The key names are the defaults of ``[data] raw_key`` / ``gt_key``. Arrays are
written through ``ppp_dist.io.volumes`` (Blosc zstd, OME-Zarr axes ``czyx``, voxel size).

Inputs (``spec`` strings):

* a file: ``.tif``/``.tiff`` (one image or a multi-page stack), ``.png`` (one 2D image), or an HDF5
  dataset ``file.h5/key`` (``.h5``, ``.hdf5``, ``.hdf``; needs the optional dependency h5py);
* a folder: its ``.tif``/``.tiff``/``.png`` files in natural order (``s2`` before ``s10``) are the Z
  slices of one volume (or, for ``read_instance_masks``, one mask per instance);
* a glob pattern (``*``, ``?``, ``[``): the matching files, in natural order, as for a folder.

Everything the user can get wrong raises :class:`~ppp_dist.errors.InputDataError` in one sentence.
``scripts/convert_to_zarr.py`` is the command line; ``docs/datasets.md`` gives the command per dataset.
"""

from __future__ import annotations

import glob
import logging
import os
import re
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ppp_dist.errors import InputDataError
from ppp_dist.geometry import Box
from ppp_dist.io import volumes

logger = logging.getLogger(__name__)

IMAGE_SUFFIXES = (".tif", ".tiff", ".png")
HDF5_SUFFIXES = (".h5", ".hdf5", ".hdf")
RAW_KEY = "volumes/raw"
GT_KEY = "volumes/gt_instances"
_SUPPORTED = "'.tif', '.tiff', '.png' or an HDF5 dataset 'file.h5/key' ('.h5', '.hdf5', '.hdf')"


@dataclass(frozen=True)
class ConvertedSample:
    """What :func:`convert_sample` wrote."""

    path: Path  # the zarr store
    raw_key: str
    raw_shape: tuple[int, ...]  # (C, Z, Y, X)
    raw_dtype: str
    gt_key: str | None = None
    gt_shape: tuple[int, ...] | None = None  # (K, Z, Y, X)
    num_instances: int = 0


def _natural_key(path: Path) -> list[object]:
    return [int(t) if t.isdigit() else t.lower() for t in re.split(r"(\d+)", path.name)]


def _split_hdf5(spec: str) -> tuple[Path, str] | None:
    """``"a/b.h5/volumes/raw"`` -> ``(Path("a/b.h5"), "volumes/raw")``; None for other paths."""
    parts = Path(spec).parts
    for i, part in enumerate(parts):
        if part.lower().endswith(HDF5_SUFFIXES):
            return Path(*parts[:i + 1]), "/".join(parts[i + 1:])
    return None


def expand_paths(spec: str | os.PathLike[str]) -> list[Path]:
    """The image files named by ``spec``: a file, a folder (its image files) or a glob, in natural order."""
    spec = os.fspath(spec)
    if any(c in spec for c in "*?["):
        files = [Path(p) for p in glob.glob(spec) if Path(p).is_file()]
        if not files:
            raise InputDataError(f"no file matches {spec!r}; check the pattern and quote it in the shell")
    else:
        path = Path(spec)
        if path.is_dir():
            files = [p for p in path.iterdir() if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES]
            if not files:
                raise InputDataError(f"folder {path} holds no {', '.join(IMAGE_SUFFIXES)} files; "
                                     f"point at the folder of images")
        elif _split_hdf5(spec) is not None:
            return [Path(spec)]
        elif not path.exists():
            raise InputDataError(f"input {path} does not exist; check the path")
        else:
            files = [path]
    bad = [p for p in files if p.suffix.lower() not in IMAGE_SUFFIXES and _split_hdf5(str(p)) is None]
    if bad:
        raise InputDataError(f"{bad[0]} has the unsupported extension {bad[0].suffix!r}; convert_to_zarr "
                             f"reads {_SUPPORTED}")
    return sorted(files, key=_natural_key)


def _read_hdf5(spec: str) -> np.ndarray:
    file, key = _split_hdf5(spec)  # type: ignore[misc]
    try:
        import h5py
    except ImportError as err:
        raise InputDataError(f"reading the HDF5 file {file} needs the optional dependency h5py; install "
                             f"it with pip install h5py") from err
    if not file.is_file():
        raise InputDataError(f"HDF5 file {file} does not exist; check the path")
    with h5py.File(file, "r") as f:
        if not key or key not in f or not isinstance(f[key], h5py.Dataset):
            names: list[str] = []
            f.visititems(lambda name, obj: names.append(name) if isinstance(obj, h5py.Dataset) else None)
            raise InputDataError(f"no dataset {key or '(none given)'!r} in {file}; name one as "
                                 f"'{file}/KEY', datasets there: {', '.join(names) or 'none'}")
        return np.asarray(f[key])


def _read_file(path: Path) -> tuple[np.ndarray, str | None]:
    """One file as an array, plus its axis letters when the format says them (TIFF series axes)."""
    if _split_hdf5(str(path)) is not None and path.suffix.lower() not in IMAGE_SUFFIXES:
        return _read_hdf5(str(path)), None
    suffix = path.suffix.lower()
    try:
        if suffix in (".tif", ".tiff"):
            import tifffile
            with tifffile.TiffFile(path) as tif:
                series = tif.series[0]
                return np.asarray(series.asarray()), series.axes.upper()
        import imageio.v3 as iio
        image = np.asarray(iio.imread(path))
        return image, ("YXS" if image.ndim == 3 else "YX")
    except ImportError as err:
        raise InputDataError(f"reading {path} needs the package {err.name}; install it with "
                             f"pip install {'tifffile' if suffix != '.png' else 'imageio'}") from err
    except (OSError, ValueError) as err:
        first = next((line.strip() for line in str(err).splitlines() if line.strip()), type(err).__name__)
        raise InputDataError(f"cannot read {path}: {first}") from err


def _to_czyx(image: np.ndarray, axes: str | None, name: str, *, channel_axis: int | None,
             gray: bool, colour: str = "error") -> np.ndarray:
    """``(C, Z, Y, X)`` from one file's array; ``colour`` "any" = a voxel is set if any colour channel is."""
    colour_axis = channel_axis
    if colour_axis is None and axes is not None and len(axes) == image.ndim:
        # C (e.g. ImageJ's Z, C, Y, X) or interleaved colour samples (Y, X, S); a planar S Y X from a
        # plain numpy stack of 3 or 4 slices is read as Z slices
        found = [i for i, a in enumerate(axes) if a == "C" or (a == "S" and i == len(axes) - 1)]
        colour_axis = found[0] if found else None
        if colour_axis is not None and not gray and colour == "error":
            raise InputDataError(f"{name} has colour channels (axes {axes}, shape {image.shape}); pass "
                                 f"--gray to average R, G, B, or --channel-axis {colour_axis} to keep them "
                                 f"as channels")
    if colour_axis is not None:
        if not -image.ndim <= colour_axis < image.ndim:
            raise InputDataError(f"--channel-axis {colour_axis} does not exist in {name} of shape "
                                 f"{image.shape}; give an axis between 0 and {image.ndim - 1}")
        image = np.moveaxis(image, colour_axis, 0)
        if gray:
            image = image[:3].astype(np.float32).mean(axis=0, keepdims=True)
        elif colour == "any":
            image = np.any(image != 0, axis=0, keepdims=True)
    else:
        if gray:
            raise InputDataError(f"--gray needs colour channels but {name} has none (shape {image.shape}); "
                                 f"drop --gray")
        image = image[np.newaxis]
    if image.ndim == 3:
        image = image[:, np.newaxis]
    if image.ndim != 4:
        raise InputDataError(f"{name} has {image.ndim - 1} spatial axes after taking the channels out "
                             f"(shape {image.shape}); expected (Y, X) or (Z, Y, X), so pass "
                             f"--channel-axis for a channel axis")
    return image


def read_image(spec: str | os.PathLike[str], *, channel_axis: int | None = None, gray: bool = False,
               colour: str = "error") -> np.ndarray:
    """Read one image or volume as ``(C, Z, Y, X)``.

    Parameters
    ----------
    spec : str
        A file, a folder of Z slices or a glob of Z slices (see the module docstring).
    channel_axis : int, optional
        Axis of the channels in each file's array (e.g. 2 for an RGB PNG of shape (Y, X, 3)); default: no
        channel axis (C = 1), unless the file says it has colour samples, which is then an error.
    gray : bool
        Average the first three colour channels into one (RGB/RGBA -> C = 1, float32), as the original
        data scripts did.
    colour : {"error", "any"}
        What to do with colour channels nobody asked for: refuse, or OR them (for binary masks).

    Returns
    -------
    numpy.ndarray
        ``(C, Z, Y, X)``, dtype as stored (float32 with ``gray``).
    """
    spec = os.fspath(spec)
    files = expand_paths(spec)
    if len(files) == 1:
        image, axes = _read_file(files[0])
        return _to_czyx(image, axes, str(files[0]), channel_axis=channel_axis, gray=gray, colour=colour)
    slices: list[np.ndarray] = []
    for path in files:
        image, axes = _read_file(path)
        czyx = _to_czyx(image, axes, str(path), channel_axis=channel_axis, gray=gray, colour=colour)
        if czyx.shape[1] != 1:
            raise InputDataError(f"{path} holds {czyx.shape[1]} slices but the files of {spec} are read as "
                                 f"one 2D slice each; convert a multi-page stack on its own")
        if slices and czyx.shape != slices[0].shape:
            raise InputDataError(f"{path} has shape {czyx.shape[2:]} but {files[0]} has "
                                 f"{slices[0].shape[2:]}; all slices of {spec} must have the same size")
        slices.append(czyx)
    logger.info("read %d slices from %s", len(slices), spec)
    return np.concatenate(slices, axis=1)


def _label_dtype(max_id: int) -> np.dtype:
    for dtype in (np.uint16, np.uint32, np.uint64):
        if max_id <= np.iinfo(dtype).max:
            return np.dtype(dtype)
    raise InputDataError(f"label id {max_id} does not fit 64 bits")


def _as_ids(image: np.ndarray, name: str) -> np.ndarray:
    if image.dtype == np.bool_:
        return image.astype(np.uint8)
    if image.dtype.kind == "f":
        if not np.all(np.isfinite(image)) or not np.array_equal(image, np.round(image)):
            raise InputDataError(f"{name} holds non-integer values ({image.dtype}); labels must be "
                                 f"integer instance ids")
        image = image.astype(np.int64)
    if image.dtype.kind not in "iu":
        raise InputDataError(f"{name} has dtype {image.dtype}; labels must be integer instance ids")
    if image.size and image.min() < 0:
        raise InputDataError(f"{name} holds negative ids (minimum {image.min()}); ids must be >= 0")
    return image


def read_labels(spec: str | os.PathLike[str], *, connected_components: str | None = None) -> np.ndarray:
    """Read a flat label image (0 = background) as ``(1, Z, Y, X)`` instance ids.

    Parameters
    ----------
    spec : str
        A label file, folder or glob of label slices (see the module docstring).
    connected_components : {None, "2d", "3d"}
        Label the connected components (face connectivity) of the non-zero voxels instead of using the
        values as ids: ``"2d"`` per Z slice (ids stay unique over the stack), ``"3d"`` in the volume.
        For boundary maps such as the ISBI 2012 labels (255 = interior, 0 = membrane).

    Returns
    -------
    numpy.ndarray
        ``(1, Z, Y, X)``, uint16 (uint32/uint64 when the ids need it).
    """
    spec = os.fspath(spec)
    image = read_image(spec)
    if image.shape[0] != 1:
        raise InputDataError(f"labels {spec} have {image.shape[0]} channels; a flat label image has one")
    ids = _as_ids(image[0], spec)
    if connected_components is not None:
        from scipy import ndimage
        if connected_components == "3d":
            ids, _ = ndimage.label(ids != 0)
        elif connected_components == "2d":
            out = np.zeros(ids.shape, dtype=np.int64)
            offset = 0
            for z in range(ids.shape[0]):
                labelled, n = ndimage.label(ids[z] != 0)
                out[z] = np.where(labelled > 0, labelled + offset, 0)
                offset += n
            ids = out
        else:
            raise InputDataError(f"connected components must be '2d' or '3d', got {connected_components!r}")
    return ids.astype(_label_dtype(int(ids.max(initial=0))))[np.newaxis]


def read_instance_masks(spec: str | os.PathLike[str], *, flat: bool = False) -> np.ndarray:
    """Read one binary mask per instance (non-zero = inside) as a channel stack of ids 1..N.

    Parameters
    ----------
    spec : str
        A folder or glob of mask files, one instance each (2D images or 3D stacks, all the same shape);
        instance i (1-based, natural file order) gets id i.
    flat : bool
        Pack all instances into one channel (K = 1); where masks overlap the later one wins (logged).

    Returns
    -------
    numpy.ndarray
        ``(N, Z, Y, X)`` with channel i - 1 holding id i inside mask i (overlaps preserved), or
        ``(1, Z, Y, X)`` with ``flat``; uint16 (uint32 beyond 65,535 instances).
    """
    spec = os.fspath(spec)
    files = expand_paths(spec)
    dtype = _label_dtype(len(files))
    masks = None
    first = files[0]
    for i, path in enumerate(files, start=1):
        mask = read_image(path, colour="any")[0] != 0
        if masks is None:
            masks = np.zeros(((1 if flat else len(files)),) + mask.shape, dtype=dtype)
        elif mask.shape != masks.shape[1:]:
            raise InputDataError(f"mask {path} has shape {mask.shape} but {first} has {masks.shape[1:]}; "
                                 f"all instance masks of {spec} must have the same shape")
        if not mask.any():
            logger.warning("instance mask %s is empty; id %d has no voxels", path, i)
        if flat:
            overlap = int(np.count_nonzero(masks[0][mask]))
            if overlap:
                logger.warning("mask %s overlaps earlier masks in %d voxels; the later mask wins there",
                               path, overlap)
            masks[0][mask] = i
        else:
            masks[i - 1][mask] = i
    logger.info("read %d instance masks from %s", len(files), spec)
    assert masks is not None  # expand_paths never returns an empty list
    return masks


def _prepare_and_write(text: str, data: np.ndarray, *, voxel_size: tuple[float, float, float],
                       kind: str, overwrite: bool, attrs: dict) -> None:
    spatial = data.shape[1:]
    chunks = volumes.choose_chunks(spatial, spatial, channels=data.shape[0] if kind == "image" else 1,
                                   itemsize=data.dtype.itemsize)
    lead = data.shape[0] if kind == "image" else 1
    arr = volumes.prepare_array(text, shape=data.shape, chunks=(lead,) + tuple(chunks), dtype=data.dtype,
                                overwrite=overwrite, axes="czyx", voxel_size=voxel_size, kind=kind,
                                attrs=attrs, overwrite_hint="pass --overwrite")
    volumes.write_box(arr, Box.from_shape(spatial), data)


def _voxel_size(voxel_size: Sequence[float]) -> tuple[float, float, float]:
    values = tuple(float(v) for v in voxel_size)
    if len(values) == 2:
        values = (1.0,) + values
    if len(values) != 3 or min(values) <= 0:
        raise InputDataError(f"voxel size {list(voxel_size)} must be 3 positive numbers (Z, Y, X) or 2 (Y, X)")
    return values


def convert_sample(raw: str | Sequence[str], out: str | os.PathLike[str], *, labels: str | None = None,
                   label_masks: str | None = None, labels_flat: bool = False,
                   labels_cc: str | None = None, channel_axis: int | None = None, gray: bool = False,
                   voxel_size: Sequence[float] = (1.0, 1.0, 1.0), raw_key: str = RAW_KEY,
                   gt_key: str = GT_KEY, overwrite: bool = False) -> ConvertedSample:
    """Convert one sample: raw (several specs = concatenated channels) and optional labels into ``out``.

    Parameters
    ----------
    raw : str or list of str
        Raw image specs; each gives ``(C_i, Z, Y, X)`` and they are stacked along C in the given order
        (e.g. BBBC010's GFP and brightfield files).
    out : path
        The zarr store to write (a directory, ``.zarr`` suffix recommended).
    labels : str, optional
        A flat label image (K = 1), see :func:`read_labels`; ``labels_cc`` labels its components.
    label_masks : str, optional
        A folder or glob of per-instance masks, see :func:`read_instance_masks`; ``labels_flat`` packs them.
    channel_axis, gray : see :func:`read_image` (raw only).
    voxel_size : (Z, Y, X) or (Y, X)
        Physical voxel size written to the OME metadata.
    raw_key, gt_key : str
        Array keys inside ``out``.
    overwrite : bool
        Replace existing arrays of another layout.
    """
    raw_specs = [raw] if isinstance(raw, (str, os.PathLike)) else list(raw)
    if not raw_specs:
        raise InputDataError("no raw input given; pass --raw PATH")
    if labels is not None and label_masks is not None:
        raise InputDataError("give either labels (a flat label image) or label masks (one file per "
                             "instance), not both")
    size = _voxel_size(voxel_size)
    parts = [read_image(s, channel_axis=channel_axis, gray=gray) for s in raw_specs]
    for spec, part in zip(raw_specs[1:], parts[1:]):
        if part.shape[1:] != parts[0].shape[1:] or part.dtype != parts[0].dtype:
            raise InputDataError(f"raw {spec} has shape {part.shape[1:]} ({part.dtype}) but {raw_specs[0]} "
                                 f"has {parts[0].shape[1:]} ({parts[0].dtype}); channels must match")
    raw_data = np.concatenate(parts, axis=0) if len(parts) > 1 else parts[0]
    gt = None
    if labels is not None:
        gt = read_labels(labels, connected_components=labels_cc)
    elif label_masks is not None:
        gt = read_instance_masks(label_masks, flat=labels_flat)
    if gt is not None and gt.shape[1:] != raw_data.shape[1:]:
        raise InputDataError(f"labels {labels or label_masks} have shape {gt.shape[1:]} (Z, Y, X) but raw "
                             f"{raw_specs[0]} has {raw_data.shape[1:]}; they must match")
    out = Path(out)
    provenance = {"ppp_dist": {"converted_from": [str(s) for s in raw_specs]}}
    _prepare_and_write(f"{out}/{raw_key}", raw_data, voxel_size=size, kind="image", overwrite=overwrite,
                       attrs=provenance)
    info = ConvertedSample(out, raw_key, tuple(raw_data.shape), str(raw_data.dtype))
    if gt is not None:
        _prepare_and_write(f"{out}/{gt_key}", gt, voxel_size=size, kind="labels", overwrite=overwrite,
                           attrs={"ppp_dist": {"converted_from": str(labels or label_masks)}})
        n = int(len(np.unique(gt))) - int(bool((gt == 0).any()))
        info = ConvertedSample(out, raw_key, tuple(raw_data.shape), str(raw_data.dtype), gt_key,
                               tuple(gt.shape), n)
    logger.info("wrote %s: raw %s %s%s", out, info.raw_shape, info.raw_dtype,
                f", labels {info.gt_shape} with {info.num_instances} instances" if gt is not None else "")
    return info


def convert_per_file(raw_dir: str | os.PathLike[str], out_dir: str | os.PathLike[str], *,
                     labels_dir: str | os.PathLike[str] | None = None, **options) -> list[ConvertedSample]:
    """One sample per image file: ``raw_dir/NAME.ext`` (+ ``labels_dir/NAME.*``) -> ``out_dir/NAME.zarr``.

    ``options`` go to :func:`convert_sample` (``labels_cc``, ``channel_axis``, ``gray``, ``voxel_size``,
    keys, ``overwrite``). A label file is found by the raw file's stem with any supported extension.
    """
    raw_files = expand_paths(raw_dir)
    label_files: dict[str, Path] = {}
    if labels_dir is not None:
        label_files = {p.stem: p for p in expand_paths(labels_dir)}
        missing = [p.name for p in raw_files if p.stem not in label_files]
        if missing:
            raise InputDataError(f"no label file for {missing[0]} in {labels_dir} ({len(missing)} of "
                                 f"{len(raw_files)} missing); label files must have the raw file's name")
    results = []
    for path in raw_files:
        labels = str(label_files[path.stem]) if labels_dir is not None else None
        results.append(convert_sample(str(path), Path(out_dir) / f"{path.stem}.zarr", labels=labels,
                                      **options))
    return results


__all__ = ["ConvertedSample", "expand_paths", "read_image", "read_labels", "read_instance_masks",
           "convert_sample", "convert_per_file", "RAW_KEY", "GT_KEY"]
