"""Zarr volumes: parse paths, open inputs, prepare outputs, read and write boxes.

A volume is named by one string, ``"<store>/<key>"``, e.g. ``"data/fly.zarr/volumes/raw"``; the store
is the first path component ending in ``.zarr``, ``.zarr.zip`` or ``.zip`` (or, without such a suffix,
the outermost directory holding zarr metadata). Inputs may be zarr v2 or v3 directory stores or read-only
zip stores; outputs are zarr v3 (v2 when added to an existing v2 store), Blosc-zstd compressed, with
OME-Zarr metadata (see ``ppp_dist.io.ome``). Boxes are ``geometry.Box`` over the trailing spatial axes;
leading axes (channels) are always read and written whole unless ``channels`` selects some.

Writes must be whole chunks (or shards): ``write_box`` refuses a box that starts or ends inside a chunk,
because two blocks writing into one chunk silently lose data.
"""

from __future__ import annotations

import difflib
import errno
import json
import logging
import os
import zipfile
from collections.abc import Sequence
from pathlib import Path, PurePosixPath
from typing import Any, Literal

import numcodecs
import numpy as np
import zarr
from zarr.codecs import BloscCodec
from zarr.errors import ContainsArrayError, ContainsGroupError, NodeNotFoundError
from zarr.storage import LocalStore, ZipStore

from ppp_dist.errors import ConfigError, InputDataError, StorageError
from ppp_dist.geometry import BlockGrid, Box, Shape, check_chunk_alignment, trailing
from ppp_dist.io import ome
from ppp_dist.io.ome import axes_of, check_array, describe, offset_of, spatial_ndim, voxel_size_of

logger = logging.getLogger(__name__)

STORE_SUFFIXES = (".zarr.zip", ".zarr", ".zip")
_META_FILES = ("zarr.json", ".zgroup", ".zarray")


def parse_array_path(text: str | os.PathLike[str]) -> tuple[Path, str]:
    """Split ``"x.zarr/volumes/raw"`` into ``(Path("x.zarr"), "volumes/raw")``; key ``""`` = store root."""
    raw = os.fspath(text)
    parts = PurePosixPath(raw.strip()).parts if raw.strip() else ()
    if not parts:
        raise ConfigError("empty zarr path; give a path such as 'data.zarr/volumes/raw'")
    if ".." in parts[1:]:
        raise ConfigError(f"zarr path {raw!r} contains '..'; give the path without it")
    for i, part in enumerate(parts):
        if part.lower().endswith(STORE_SUFFIXES):
            return Path(*parts[:i + 1]), "/".join(parts[i + 1:])
    for i in range(1, len(parts) + 1):
        prefix = Path(*parts[:i])
        if any((prefix / m).is_file() for m in _META_FILES):
            return prefix, "/".join(parts[i:])
    raise ConfigError(f"cannot tell where the zarr store ends in {raw!r}; give the store a .zarr or "
                      f".zip suffix, e.g. 'data.zarr/volumes/raw'")


def _metadata(text: bytes, where: str) -> dict[str, Any]:
    """A zarr.json document; InputDataError naming the file if it is damaged (truncated, not UTF-8 JSON)."""
    try:
        meta = json.loads(text.decode("utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as err:
        raise InputDataError(f"zarr metadata {where} is damaged ({type(err).__name__}: {err}); the store was not "
                             "written completely: write it again or restore it from a copy") from err
    if not isinstance(meta, dict):
        raise InputDataError(f"zarr metadata {where} is damaged (not a JSON object); write it again or restore it "
                             "from a copy")
    return meta


def list_arrays(store_path: str | os.PathLike[str]) -> list[str]:
    """Keys of all arrays in a directory or zip store (chunk directories are not walked)."""
    store_path = Path(store_path)
    keys: list[str] = []
    if store_path.is_file():
        with zipfile.ZipFile(store_path) as zf:
            for name in zf.namelist():
                parent, _, leaf = name.rpartition("/")
                if leaf == ".zarray" or (leaf == "zarr.json" and
                                         _metadata(zf.read(name), f"{store_path}/{name}").get("node_type") == "array"):
                    keys.append(parent)
        return sorted(keys)
    for dirpath, dirnames, filenames in os.walk(store_path):
        is_array = ".zarray" in filenames
        if not is_array and "zarr.json" in filenames:
            meta = os.path.join(dirpath, "zarr.json")
            with open(meta, "rb") as f:
                is_array = _metadata(f.read(), meta).get("node_type") == "array"
        if is_array:
            rel = os.path.relpath(dirpath, store_path)
            keys.append("" if rel == "." else Path(rel).as_posix())
            dirnames[:] = []
        else:
            dirnames.sort()
    return sorted(keys)


def _open_store(store_path: Path, text: str, mode: str) -> LocalStore | ZipStore:
    if not store_path.exists():
        raise InputDataError(f"zarr store {store_path} does not exist (from {text!r}); check the path")
    if store_path.is_file():
        if mode != "r":
            raise StorageError(f"{store_path} is a zip store, which ppp_dist only reads; write outputs to "
                               f"a .zarr directory instead")
        if not zipfile.is_zipfile(store_path):
            raise InputDataError(f"{store_path} is a file but not a readable zip store; give a .zarr "
                                 f"directory or a zip made of one")
        return ZipStore(store_path, mode="r")
    return LocalStore(store_path, read_only=(mode == "r"))


def open_array(text: str | os.PathLike[str], mode: Literal["r", "r+"] = "r") -> zarr.Array:
    """Open the array named by ``text`` (see ``parse_array_path``); ``mode`` is ``"r"`` or ``"r+"``."""
    if mode not in ("r", "r+"):
        raise ValueError(f"mode {mode!r} must be 'r' or 'r+' (use prepare_array to create arrays)")
    text = os.fspath(text)
    store_path, key = parse_array_path(text)
    store = _open_store(store_path, text, mode)
    try:
        node = zarr.open(store, path=key, mode=mode)
    except (NodeNotFoundError, FileNotFoundError, KeyError) as err:
        arrays = list_arrays(store_path)
        if not key:
            raise InputDataError(f"no zarr array or group at the root of {store_path}; name an array "
                                 f"inside it, e.g. '{store_path}/volumes/raw'") from err
        close = difflib.get_close_matches(key, arrays, n=1)
        hint = f"did you mean '{close[0]}'? " if close else ""
        names = ", ".join(a or "(the store root)" for a in arrays) or "none"
        raise InputDataError(f"no array '{key}' in {store_path}; {hint}arrays there: {names}") from err
    except (ValueError, TypeError, json.JSONDecodeError) as err:
        raise InputDataError(f"cannot read the zarr metadata of '{key}' in {store_path}: {err}") from err
    if not isinstance(node, zarr.Array):
        inside = [a for a in list_arrays(store_path) if a.startswith(f"{key}/" if key else "")]
        raise InputDataError(f"'{key or '/'}' in {store_path} is a group, not an array; name one of its "
                             f"arrays: {', '.join(inside) or 'none'}")
    return node


def open_group(text: str | os.PathLike[str]) -> zarr.Group:
    """Open the group named by ``text`` read-only; ``InputDataError`` if it is missing or an array."""
    text = os.fspath(text).rstrip("/")
    store_path, key = parse_array_path(text)
    store = _open_store(store_path, text, "r")
    try:
        node = zarr.open(store, path=key, mode="r")
    except (NodeNotFoundError, FileNotFoundError, KeyError) as err:
        raise InputDataError(f"no zarr group '{key or '/'}' in {store_path}; check the path") from err
    except (ValueError, TypeError, json.JSONDecodeError) as err:
        raise InputDataError(f"cannot read the zarr metadata of '{key or '/'}' in {store_path}: {err}") from err
    if isinstance(node, zarr.Array):
        raise InputDataError(f"{text} is an array, not a group; give the group that holds it "
                             f"('{text.rpartition('/')[0] or store_path}')")
    return node


def check_not_empty(arr: zarr.Array | np.ndarray, spec: str) -> None:
    """``InputDataError`` if ``arr`` has an axis of length 0 (a volume without voxels)."""
    if any(int(s) == 0 for s in arr.shape):
        raise InputDataError(f"{spec} is empty: its shape {tuple(arr.shape)} has an axis of length 0; give a "
                             "volume with at least one voxel")


def _scan(arr: zarr.Array, max_bytes: int):
    """``(box, values)`` over the whole array, each block a whole number of chunks along every spatial axis (all
    channels) of at most about ``max_bytes`` (one chunk at least), so memory stays bounded; ``values`` has
    all leading axes."""
    n = spatial_ndim(arr)
    lead = arr.ndim - n
    spatial, grain = tuple(int(s) for s in arr.shape[lead:]), [int(c) for c in arr.chunks[lead:]]
    per_voxel = int(np.prod(arr.shape[:lead], dtype=np.int64)) * np.dtype(arr.dtype).itemsize
    block = list(grain)
    for ax in range(n):  # grow the block along the first axes while it stays under max_bytes
        while block[ax] < spatial[ax] and int(np.prod(block)) * 2 * per_voxel <= max_bytes:
            block[ax] *= 2
    for spec_ in BlockGrid(spatial, tuple(block)):
        box = spec_.write_box
        yield box, np.asarray(arr[(slice(None),) * lead + box.slices])


def _where(arr: zarr.Array, box: Box, first: tuple[int, ...]) -> str:
    """``channel c, voxel (z, y, x)`` of the index ``first`` into the block ``box`` of ``arr``."""
    lead = arr.ndim - spatial_ndim(arr)
    where = list(first[:lead]) + [b + i for b, i in zip(box.begin, first[lead:])]
    lead_part = ", ".join(map(str, where[:lead]))
    return f"channel {lead_part}, voxel {tuple(where[lead:])}" if lead else f"voxel {tuple(where)}"


def check_finite(arr: zarr.Array, spec: str, hint: str, *, max_bytes: int = 2 ** 26,
                 limit_bytes: int | None = None, bounds: tuple[float, float] | None = None,
                 bounds_hint: str = "") -> bool:
    """``InputDataError`` naming the first NaN or infinite value of a floating-point array (and, with
    ``bounds``, the first value outside ``[low, high]``).

    Integer arrays pass at once (they cannot hold NaN); complex arrays are refused. Float arrays are read
    once, block by block (see ``_scan``), so memory stays bounded. An array larger than ``limit_bytes`` is not
    read (returns False): its consumers check what they read. ``hint`` says what to do, e.g. "replace them
    before predict"; ``bounds_hint`` what to do about values out of bounds.
    """
    check_real(arr, spec)
    if np.dtype(arr.dtype).kind != "f" or any(int(s) == 0 for s in arr.shape):
        return True
    if limit_bytes is not None and arr.nbytes > limit_bytes:
        logger.debug("%s: %d bytes, not scanned for NaN before the run", spec, arr.nbytes)
        return False
    for box, values in _scan(arr, max_bytes):
        bad = ~np.isfinite(values)
        if bad.any():
            first = tuple(int(i) for i in np.argwhere(bad)[0])
            what = "NaN" if np.isnan(values[first]) else "infinite values"
            raise InputDataError(f"{spec} contains {what} (for example at {_where(arr, box, first)}); {hint}")
        if bounds is not None:
            outside = (values < bounds[0]) | (values > bounds[1])
            if outside.any():
                first = tuple(int(i) for i in np.argwhere(outside)[0])
                raise InputDataError(f"{spec} holds {float(values[first]):g} at {_where(arr, box, first)}, outside "
                                     f"[{bounds[0]:g}, {bounds[1]:g}]; {bounds_hint}")
    return True


def check_real(arr: zarr.Array | np.ndarray, spec: str) -> None:
    """``InputDataError`` unless ``arr`` holds real numbers (bool, integer or float): complex values would lose
    their imaginary part silently, strings and records cannot be computed with."""
    dtype = np.dtype(arr.dtype)
    if dtype.kind not in "biuf":
        kind = "complex numbers" if dtype.kind == "c" else f"values of dtype {dtype}"
        raise InputDataError(f"{spec} holds {kind} ({dtype}); give real numbers (integer or float), e.g. the "
                             "magnitude or the real part")


def check_ids(arr: zarr.Array, spec: str, *, max_bytes: int = 2 ** 26) -> None:
    """``InputDataError`` naming the first negative id of a signed-integer label array (read block by block;
    unsigned and bool arrays pass at once)."""
    if np.dtype(arr.dtype).kind != "i" or any(int(s) == 0 for s in arr.shape):
        return
    for box, values in _scan(arr, max_bytes):
        if values.min() < 0:
            first = tuple(int(i) for i in np.argwhere(values < 0)[0])
            raise InputDataError(f"{spec} holds the negative id {int(values[first])} at {_where(arr, box, first)}; "
                                 "instance ids must be >= 0 (0 = background)")


def _as_array(arr: zarr.Array | str | os.PathLike[str], mode: Literal["r", "r+"] = "r") -> zarr.Array:
    return arr if isinstance(arr, zarr.Array) else open_array(arr, mode)


def spatial_shape(arr: zarr.Array | str | os.PathLike[str]) -> Shape:
    """Shape of the spatial axes of ``arr``, e.g. ``(Z, Y, X)``."""
    arr = _as_array(arr)
    return tuple(arr.shape[arr.ndim - spatial_ndim(arr):])


def choose_chunks(spatial_shape: Sequence[int], block_shape: Sequence[int], channels: int | None = None,
                  *, itemsize: int = 1, target_bytes: int = 2 ** 21) -> Shape:
    """Spatial chunk shape such that every block is a whole number of chunks.

    Along an axis with several blocks the chunk divides the block; along an axis that one block covers it
    is at most the volume extent. Starting from the block shape, the largest axis is shrunk to its next
    smaller option until a chunk (all ``channels`` together, ``itemsize`` bytes per value) holds at most
    ``target_bytes``.

    Returns
    -------
    tuple of int
        One chunk length per spatial axis; prepend the channel chunk for channel arrays.
    """
    vol = tuple(int(v) for v in spatial_shape)
    block = tuple(int(b) for b in block_shape)
    if len(vol) != len(block) or min(vol + block) < 1:
        raise ConfigError(f"block shape {block} and volume shape {vol} must have the same number of "
                          f"axes and be >= 1")
    options = []
    for v, b in zip(vol, block):
        if b < v:
            options.append([d for d in range(b, 0, -1) if b % d == 0])
        else:
            halvings = [v]
            while halvings[-1] > 1:
                halvings.append(-(-halvings[-1] // 2))
            options.append(halvings)
    pos = [0] * len(vol)
    per_voxel = itemsize * (channels or 1)
    while int(np.prod([o[p] for o, p in zip(options, pos)])) * per_voxel > target_bytes:
        movable = [ax for ax in range(len(vol)) if pos[ax] + 1 < len(options[ax])]
        if not movable:
            break
        ax = max(movable, key=lambda a: (options[a][pos[a]], -a))
        pos[ax] += 1
    return tuple(o[p] for o, p in zip(options, pos))


def _check_writable(store_path: Path, text: str) -> None:
    probe = store_path
    while not probe.exists() and probe != probe.parent:
        probe = probe.parent
    if not probe.is_dir():
        raise StorageError(f"cannot create output {text}: {probe} is a file, not a directory; choose "
                           f"another output path")
    if not os.access(probe, os.W_OK):
        raise StorageError(f"cannot write output {text}: {probe} is not writable; choose a writable "
                           f"output directory or fix its permissions")


def _layout_differences(arr: zarr.Array, shape: Shape, chunks: Shape, dtype: np.dtype,
                        shards: Shape | None) -> list[str]:
    wanted = {"shape": shape, "chunks": chunks, "dtype": dtype, "shards": shards}
    found = {"shape": arr.shape, "chunks": arr.chunks, "dtype": np.dtype(arr.dtype), "shards": arr.shards}
    return [f"{k} is {found[k]} but {wanted[k]} was requested" for k in wanted if found[k] != wanted[k]]


def prepare_array(text: str | os.PathLike[str], *, shape: Sequence[int], chunks: Sequence[int],
                  dtype: Any, fill_value: Any = 0, overwrite: bool = False, axes: str | None = None,
                  voxel_size: Sequence[float] | None = None, offset: Sequence[float] | None = None,
                  kind: str = "image", attrs: dict[str, Any] | None = None,
                  shards: Sequence[int] | None = None, unit: str | None = None,
                  overwrite_hint: str = "pass --set general.overwrite=true") -> zarr.Array:
    """Create an output array, or reuse an existing one with the same layout.

    Call it once on the client before blocks are submitted (it is not safe to race).

    Parameters
    ----------
    text : str
        ``"out.zarr/volumes/instances"`` (a directory store).
    shape, chunks : tuple of int
        Full array shape and chunk shape, including channel axes.
    dtype : dtype-like
    fill_value : scalar
        Value of never-written chunks.
    overwrite : bool
        Replace an existing array at ``text`` (its data is deleted).
    axes : str, optional
        Axis letters out of ``tczyx``, default the last ``len(shape)`` of ``"tczyx"``.
    voxel_size, offset : tuple of float, optional
        Per spatial axis, physical units (offset = position of voxel 0); default 1s and 0s.
    kind : {"image", "labels"}
        ``"labels"`` adds OME ``image-label`` metadata (integer dtypes only).
    attrs : dict, optional
        Extra JSON attributes for the array (e.g. provenance).
    shards : tuple of int, optional
        Shard shape (zarr v3 only); blocks must then write whole shards.
    unit : str, optional
        NGFF unit of the spatial axes, e.g. ``"micrometer"``.
    overwrite_hint : str
        How the caller's user asks for ``overwrite`` (an existing array of another layout is refused with it).

    Returns
    -------
    zarr.Array
        Opened for writing.
    """
    text = os.fspath(text)
    store_path, key = parse_array_path(text)
    shape, chunks = tuple(int(s) for s in shape), tuple(int(c) for c in chunks)
    shards = None if shards is None else tuple(int(s) for s in shards)
    dtype = np.dtype(dtype)
    axes = ome.validate_axes(axes or "tczyx"[-len(shape):], len(shape))
    n = ome.spatial_count(axes)
    voxel_size = tuple(float(v) for v in (voxel_size if voxel_size is not None else (1.0,) * n))
    offset = tuple(float(v) for v in (offset if offset is not None else (0.0,) * n))
    if len(chunks) != len(shape) or len(voxel_size) != n or len(offset) != n:
        raise ValueError(f"chunks {chunks}, voxel_size {voxel_size} and offset {offset} must match "
                         f"shape {shape} with axes {axes!r}")
    if kind not in ("image", "labels") or (kind == "labels" and dtype.kind not in "iu"):
        raise ValueError(f"kind {kind!r} must be 'image' or 'labels' (labels need an integer dtype)")
    if store_path.is_file():
        raise StorageError(f"cannot write output {text}: {store_path} is a zip store or another file; "
                           f"write outputs to a .zarr directory")
    _check_writable(store_path, text)
    store = LocalStore(store_path)
    fmt: Literal[2, 3] = 2 if any((store_path / m).exists() for m in (".zgroup", ".zarray")) and not (
        store_path / "zarr.json").exists() else 3
    meta: dict[str, Any] = {"voxel_size": list(voxel_size), "resolution": list(voxel_size), "offset": list(offset),
            "axes": axes}
    try:
        existing = None if overwrite else zarr.open(store, path=key, mode="r+")
    except (NodeNotFoundError, FileNotFoundError):
        existing = None
    if key and existing is None and store_path.exists():
        parents = {"/".join(key.split("/")[:i]) for i in range(len(key.split("/")))}
        if parents & set(list_arrays(store_path)):
            raise StorageError(f"cannot create output {text}: a parent of '{key}' in {store_path} is an "
                               f"array; choose another output path")
    if isinstance(existing, zarr.Group):
        raise StorageError(f"cannot create output {text}: '{key or '/'}' in {store_path} is a group; "
                           f"choose another output path")
    try:
        if existing is not None:
            diffs = _layout_differences(existing, shape, chunks, dtype, shards)
            if diffs:
                raise StorageError(f"output {describe(existing)} already exists with a different "
                                   f"layout: {'; '.join(diffs)}; {overwrite_hint} to "
                                   f"replace it, or choose a new output path")
            logger.info("reusing existing output %s", describe(existing))
            arr = existing
            arr.attrs.update({**(attrs or {}), **meta})
        else:
            if fmt == 2:
                compressors: Any = numcodecs.Blosc(cname="zstd", clevel=3, shuffle=(
                    numcodecs.Blosc.BITSHUFFLE if dtype.itemsize == 1 else numcodecs.Blosc.SHUFFLE))
                extra: dict[str, Any] = {}
                meta["_ARRAY_DIMENSIONS"] = list(axes)
            else:
                compressors = BloscCodec(cname="zstd", clevel=3, shuffle=(
                    "bitshuffle" if dtype.itemsize == 1 else "shuffle"))
                extra = {"dimension_names": list(axes)}
            arr = zarr.create_array(store, name=key or None, shape=shape, chunks=chunks, shards=shards,
                                    dtype=dtype, fill_value=fill_value, compressors=compressors,
                                    zarr_format=fmt, attributes={**(attrs or {}), **meta},
                                    overwrite=overwrite, **extra)
            logger.info("created %s: shape %s, chunks %s, %s, zarr v%d", describe(arr), shape, chunks,
                        dtype, fmt)
        if key:
            parent, _, name = key.rpartition("/")
            group = zarr.open_group(store, path=parent, mode="r+")
            ome.write_ome_metadata(group, name, axes=axes, voxel_size=voxel_size, offset=offset,
                                   kind=kind, unit=unit)
    except (ContainsArrayError, ContainsGroupError) as err:
        raise StorageError(f"cannot create output {text}: {err}; choose another output path") from err
    except OSError as err:
        if err.errno in (errno.ENOSPC, errno.EDQUOT):
            raise StorageError(f"no space left on the device for output {text}; free some space, then run the same "
                               "command again: it resumes where it stopped") from err
        raise StorageError(f"cannot write output {text}: {err}; choose a writable output location") from err
    return arr


def check_block_alignment(arr: zarr.Array, block_shape: Sequence[int], *,
                          roi: Box | None = None) -> None:
    """``StorageError`` unless blocks of ``block_shape`` write whole chunks (shards if sharded) of ``arr``."""
    n = spatial_ndim(arr)
    unit = "shard" if arr.shards is not None else "chunk"
    grain = (arr.shards or arr.chunks)[arr.ndim - n:]
    check_chunk_alignment(block_shape, grain, arr.shape[arr.ndim - n:], describe(arr), roi=roi, unit=unit)


def _selection(arr: zarr.Array, box: Box, channels: Any) -> tuple[Any, ...]:
    lead = arr.ndim - box.ndim
    if lead < 0:
        raise ValueError(f"box {box} has {box.ndim} axes but {describe(arr)} has only {arr.ndim}")
    extent = Box.from_shape(arr.shape[lead:])
    if not extent.contains_box(box) or box.empty:
        raise ValueError(f"box {box} is empty or leaves {describe(arr)} of spatial extent {extent}")
    if lead == 0:
        if channels != slice(None):
            raise ValueError(f"{describe(arr)} has no channel axis to select {channels!r} from")
        return box.slices
    return (channels,) + (slice(None),) * (lead - 1) + box.slices


def read_box(arr: zarr.Array | str | os.PathLike[str], box: Box, *,
             channels: int | slice | Sequence[int] = slice(None)) -> np.ndarray:
    """Read ``box`` (trailing spatial axes) of ``arr``; returns ``(C, *box.shape)`` or ``box.shape``."""
    arr = _as_array(arr)
    sel = _selection(arr, box, channels)
    if isinstance(channels, (int, np.integer, slice)):
        return np.asarray(arr[sel])
    return np.asarray(arr.oindex[sel])


def read_box_padded(arr: zarr.Array | str | os.PathLike[str], box: Box, pad_value: float = 0, *,
                    channels: int | slice | Sequence[int] = slice(None)) -> np.ndarray:
    """Like ``read_box`` but ``box`` may leave the array; the outside is filled with ``pad_value``."""
    arr = _as_array(arr)
    lead = arr.ndim - box.ndim
    lead_shape = np.empty(arr.shape[:lead], dtype=np.bool_)[(channels,)].shape if lead else ()
    out = np.full(lead_shape + box.shape, pad_value, dtype=arr.dtype)
    inner = box.intersect(Box.from_shape(arr.shape[lead:]))
    if not inner.empty:
        out[trailing(inner.relative_to(box))] = read_box(arr, inner, channels=channels)
    return out


def write_box(arr: zarr.Array | str | os.PathLike[str], box: Box, data: np.ndarray, *,
              check_alignment: bool = True) -> None:
    """Write ``data`` of shape ``(*leading, *box.shape)`` (all leading axes) into ``box`` of ``arr``.

    With ``check_alignment`` (the default) a box that does not consist of whole chunks (or shards) raises
    ``StorageError``: another block could be writing the rest of such a chunk at the same time.
    """
    arr = _as_array(arr, "r+")
    sel = _selection(arr, box, slice(None))
    lead = arr.ndim - box.ndim
    expected = tuple(arr.shape[:lead]) + box.shape
    if tuple(data.shape) != expected:
        raise ValueError(f"data of shape {data.shape} does not fit box {box} of {describe(arr)}; "
                         f"expected {expected}")
    if check_alignment:
        grain = (arr.shards or arr.chunks)[lead:]
        for b, e, c, s in zip(box.begin, box.end, grain, arr.shape[lead:]):
            if b % c or (e % c and e != s):
                raise StorageError(f"writing box {box} into {describe(arr)} would write part of a "
                                   f"{'shard' if arr.shards else 'chunk'} of {tuple(grain)}, which "
                                   f"parallel blocks overwrite; use a block shape that is a multiple "
                                   f"of {tuple(grain)}")
    try:
        arr[sel] = data
    except OSError as err:
        raise StorageError(f"cannot write {describe(arr)}: {err}; check that the output location is "
                           f"writable and has space") from err


def update_attrs(arr: zarr.Array | str | os.PathLike[str], **attrs: Any) -> None:
    """Merge ``attrs`` (JSON-serialisable) into the array's attributes."""
    _as_array(arr, "r+").attrs.update(attrs)


__all__ = ["parse_array_path", "list_arrays", "open_array", "open_group", "check_not_empty", "check_finite",
           "describe", "check_array", "axes_of",
           "spatial_ndim", "spatial_shape", "voxel_size_of", "offset_of", "choose_chunks",
           "prepare_array", "check_block_alignment", "read_box", "read_box_padded", "write_box",
           "update_attrs"]
