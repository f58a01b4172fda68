"""Write synthetic volumes larger than memory to zarr v3, one chunk-aligned block at a time.

Layout of the output group ``path``::

    path/                 zarr v3 group, attrs["ppp_dist"] = {"synthetic": scene description, ...}
      raw                 (C, Z, Y, X) float32 in [0, 1], or uint8 (= round(255 * value)); chunks (C, *chunks)
      gt_instances        (K, Z, Y, X) uint16 channel stack, ids 1..N;                     chunks (1, *chunks)

Blosc/zstd level 3. Chunks of ``gt_instances`` hold one channel, so the many all-zero channel chunks of a
packed stack are not stored at all. K is known before the first block is rendered (the scene assigns
channels by greedy colouring of objects that may touch, ``channels="packed"``, the default here).

Memory: each worker holds one block (one chunk of every array) plus the scene's object parameters.
The zarr calls are kept in :func:`_create_arrays` and :func:`_write_block` so they can move to
``ppp_dist.io.volumes`` later.
"""

from __future__ import annotations

import concurrent.futures
import logging
import multiprocessing
import os
import shutil
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from ppp_dist.data.synthetic import make_scene
from ppp_dist.data.synthetic_scene import Scene, Shape3, normalize_shape
from ppp_dist.errors import StorageError
from ppp_dist.geometry import Box, tile

logger = logging.getLogger(__name__)

RAW_NAME = "raw"
GT_NAME = "labels/gt_instances"  # its own group: OME-Zarr viewers open it as labels
RAW_DTYPES = ("float32", "uint8")
#: Refuse blocks whose rendered arrays would exceed this (e.g. per-instance channels at scale).
MAX_BLOCK_BYTES = 2 << 30


@dataclass(frozen=True)
class SyntheticVolume:
    """What :func:`write_synthetic_volume` wrote.

    Attributes
    ----------
    path : Path
        The zarr v3 group.
    kind, seed
        Scene kind and seed.
    shape, chunks : tuple[int, int, int]
        Spatial (Z, Y, X) shape and chunk shape in voxels.
    num_channels, num_layers, num_instances : int
        C of ``raw``, K of ``gt_instances``, and N (ids 1..N).
    num_blocks : int
        Blocks (= chunks per channel) written.
    seconds : float
        Wall time of the write.
    """

    path: Path
    kind: str
    seed: int
    shape: Shape3
    chunks: Shape3
    num_channels: int
    num_layers: int
    num_instances: int
    num_blocks: int
    seconds: float


def block_boxes(shape: Shape3, chunks: Shape3) -> Iterator[Box]:
    """Chunk-aligned blocks of the volume in C order, clipped at the far border."""
    for spec in tile(shape, chunks):
        yield spec.write_box


def write_synthetic_volume(path: str | os.PathLike[str], kind: str, shape: Sequence[int],
                           chunks: Sequence[int], seed: int = 0, *, raw_dtype: str = "float32",
                           n_workers: int = 1, overwrite: bool = False,
                           **params: Any) -> SyntheticVolume:
    """Render a synthetic scene block by block into a zarr v3 group.

    Parameters
    ----------
    path
        Output group (a folder); must not exist unless ``overwrite``.
    kind
        ``"tubes"``, ``"worms"``, ``"nuclei2d"`` or ``"nuclei3d"`` (see ``ppp_dist.data.synthetic``).
    shape
        Spatial (Z, Y, X) shape in voxels ((Y, X) for the 2D kinds).
    chunks
        Spatial chunk shape, same length as ``shape``; also the block shape of the write.
    seed
        Scene seed; the output equals ``make_scene(kind, shape, seed, **params).render()`` exactly
        (raw rounded to uint8 if ``raw_dtype="uint8"``).
    raw_dtype
        ``"float32"`` (values in [0, 1]) or ``"uint8"`` (``round(255 * value)``).
    n_workers
        Processes writing blocks in parallel (spawned; each holds one block). 1 writes in this process.
    overwrite
        Replace an existing ``path``.
    **params
        Scene parameters, e.g. ``n_tubes=...``; object counts default to a density, so they scale with
        the volume. ``channels`` defaults to ``"packed"`` here (K bounded by the overlap depth).

    Returns
    -------
    SyntheticVolume
        Shapes, counts and timing of what was written.

    Raises
    ------
    StorageError
        If ``path`` exists and ``overwrite`` is False.
    ValueError
        For an unknown kind or raw dtype, chunks that do not match the shape, or a block that would
        need more than 2 GiB (``MAX_BLOCK_BYTES``).
    """
    started = time.perf_counter()
    if raw_dtype not in RAW_DTYPES:
        raise ValueError(f"raw_dtype must be one of {RAW_DTYPES}, got {raw_dtype!r}")
    if n_workers < 1:
        raise ValueError(f"n_workers must be >= 1, got {n_workers}")
    planar = kind in ("worms", "nuclei2d")
    dims = normalize_shape(shape, planar=planar)
    chunk_dims = _check_chunks(chunks, len(tuple(shape)), dims)
    if kind in ("tubes", "worms"):
        params.setdefault("channels", "packed")
    scene = make_scene(kind, dims, seed=seed, **params)
    block_bytes = int(np.prod(chunk_dims)) * (4 * scene.num_channels + 2 * scene.num_layers)
    if block_bytes > MAX_BLOCK_BYTES:
        raise ValueError(f"one block of {chunk_dims} with {scene.num_channels} raw and "
                         f"{scene.num_layers} instance channels needs {block_bytes / 2**30:.1f} GiB; "
                         f"use smaller chunks or channels='packed'")
    out = Path(path)
    _create_arrays(out, scene, chunk_dims, raw_dtype, overwrite)
    boxes = list(block_boxes(dims, chunk_dims))
    logger.info("writing %s: %s scene %s seed %d, %d instances in %d channels, %d blocks of %s",
                out, kind, dims, seed, scene.num_instances, scene.num_layers, len(boxes), chunk_dims)
    if n_workers == 1:
        for done, box in enumerate(boxes, start=1):
            _write_block(out, scene, box, raw_dtype)
            _log_progress(done, len(boxes))
    else:
        context = multiprocessing.get_context("spawn")  # zarr runs an event-loop thread: never fork
        with concurrent.futures.ProcessPoolExecutor(
                max_workers=n_workers, mp_context=context, initializer=_init_worker,
                initargs=(out, scene, raw_dtype)) as pool:
            for done, _ in enumerate(pool.map(_worker_write, boxes), start=1):
                _log_progress(done, len(boxes))
    seconds = time.perf_counter() - started
    logger.info("wrote %s in %.1f s", out, seconds)
    return SyntheticVolume(path=out, kind=kind, seed=scene.seed, shape=dims, chunks=chunk_dims,
                           num_channels=scene.num_channels, num_layers=scene.num_layers,
                           num_instances=scene.num_instances, num_blocks=len(boxes),
                           seconds=seconds)


def _check_chunks(chunks: Sequence[int], ndim: int, dims: Shape3) -> Shape3:
    values = tuple(int(c) for c in chunks)
    if len(values) != ndim or any(c < 1 for c in values):
        raise ValueError(f"chunks must be {ndim} positive ints like the shape, got {tuple(chunks)}")
    full = values if len(values) == 3 else (1, *values)
    return tuple(min(c, s) for c, s in zip(full, dims))  # type: ignore[return-value]


def _log_progress(done: int, total: int) -> None:
    if done == total or done % max(1, total // 10) == 0:
        logger.info("%d / %d blocks written", done, total)


def to_raw_dtype(raw: np.ndarray, raw_dtype: str) -> np.ndarray:
    """Convert rendered float32 [0, 1] raw to the stored dtype (uint8: ``round(255 * value)``)."""
    if raw_dtype == "uint8":
        return np.rint(raw * np.float32(255.0)).astype(np.uint8)
    return raw


# --- zarr access -------------------------------------------------------------------------------------


def _create_arrays(path: Path, scene: Scene, chunks: Shape3, raw_dtype: str,
                   overwrite: bool) -> None:
    import zarr

    from ppp_dist.io import volumes

    if path.exists():
        if not overwrite:
            raise StorageError(f"{path} already exists; choose another output path or pass "
                               f"overwrite=True (make_synthetic_volume.py: --overwrite) to replace it")
        logger.warning("replacing existing %s", path)
        if path.is_dir():
            shutil.rmtree(path)
        else:
            path.unlink()
    root = zarr.open_group(str(path), mode="w-", zarr_format=3)
    root.attrs["ppp_dist"] = {"synthetic": scene.describe(), "raw_dtype": raw_dtype,
                              "raw_scale": 255 if raw_dtype == "uint8" else 1}
    volumes.prepare_array(path / RAW_NAME, shape=(scene.num_channels, *scene.shape), dtype=raw_dtype,
                          chunks=(scene.num_channels, *chunks), axes="czyx", kind="image")
    volumes.prepare_array(path / GT_NAME, shape=(scene.num_layers, *scene.shape), dtype="uint16",
                          chunks=(1, *chunks), axes="czyx", kind="labels")


def _write_block(path: Path, scene: Scene, box: Box, raw_dtype: str) -> None:
    from ppp_dist.io import volumes

    raw, instances = scene.render(box)
    volumes.write_box(path / RAW_NAME, box, to_raw_dtype(raw, raw_dtype))
    volumes.write_box(path / GT_NAME, box, instances)


_WORKER: dict[str, Any] = {}


def _init_worker(path: Path, scene: Scene, raw_dtype: str) -> None:
    _WORKER.update(path=path, scene=scene, raw_dtype=raw_dtype)


def _worker_write(box: Box) -> None:
    _write_block(_WORKER["path"], _WORKER["scene"], box, _WORKER["raw_dtype"])
