"""Training samples and random crops (ppp_reference §1.5).

A training sample is a zarr group ``path.zarr`` holding ``[data] raw_key`` (C, Z, Y, X) (or (Z, Y, X) for
C = 1) and ``[data] gt_key`` (K, Z, Y, X) integer instance channels (a flat label image (Z, Y, X) is K = 1).
``[data] train_data`` entries are such groups, or folders whose ``*.zarr`` children are.

Crops: with probability ``probability_foreground`` the crop is placed so that a random foreground voxel
lies inside its output window, with ``probability_overlap`` a random voxel within ``overlap_radius`` of an
overlap (GT numinst >= 2) voxel, otherwise uniformly. Categories without voxels fall back to foreground,
then to uniform. Voxel lists are built once per sample (in Z slabs, at most ``MAX_POINTS`` kept per list).
Raw is normalised per sample (``[data] normalization``, :mod:`ppp_dist.learning.normalize`) and mirrored at
the volume border, as in prediction; output windows lie inside the volume where it is large enough, so the
loss never sees voxels outside it. A sample whose normalised values are nearly constant is refused.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from scipy import ndimage

from ppp_dist.config.sections import DataConfig
from ppp_dist.errors import ConfigError, InputDataError
from ppp_dist.geometry import Box, trailing
from ppp_dist.io.volumes import open_array, read_box
from ppp_dist.learning.normalize import Normalizer, check_spread, fit

logger = logging.getLogger(__name__)

MAX_POINTS = 2_000_000  # per sample and category
IN_MEMORY_BYTES = 512 * 2 ** 20  # samples smaller than this are read into memory once per worker


@dataclass(frozen=True)
class CropGeometry:
    """Spatial shapes (Z, Y, X) of one training crop: network input, output, and GT = output + 2h."""

    input_shape: tuple[int, int, int]
    output_shape: tuple[int, int, int]
    patch_shape: tuple[int, int, int]

    @property
    def gt_shape(self) -> tuple[int, int, int]:
        return tuple(o + 2 * (p // 2) for o, p in zip(self.output_shape, self.patch_shape))  # type: ignore

    def boxes(self, out_begin: tuple[int, ...]) -> tuple[Box, Box, Box]:
        """(raw box, output box, gt box) in volume coordinates for an output window at ``out_begin``."""
        out = Box(tuple(out_begin), tuple(b + s for b, s in zip(out_begin, self.output_shape)))
        ctx = tuple((i - o) // 2 for i, o in zip(self.input_shape, self.output_shape))
        raw = Box(tuple(b - c for b, c in zip(out.begin, ctx)),
                  tuple(b - c + i for b, c, i in zip(out.begin, ctx, self.input_shape)))
        h = tuple(p // 2 for p in self.patch_shape)
        return raw, out, out.grow(h)


def normalize_raw(raw: np.ndarray, data: DataConfig) -> np.ndarray:
    """float32 network input from stored raw (C, ...) with the normaliser of ``[data]`` (see
    :mod:`ppp_dist.learning.normalize`; percentile / minmax values are found on ``raw`` itself)."""
    return fit(np.asarray(raw), data)(raw)


def mirror_indices(begin: int, end: int, size: int) -> np.ndarray:
    """Volume indices of positions ``begin .. end - 1`` on an axis of ``size`` voxels, mirrored at both ends
    (edge voxel repeated, as ``numpy.pad`` symmetric; period ``2 * size``)."""
    i = np.mod(np.arange(begin, end), 2 * size)
    return np.where(i >= size, 2 * size - 1 - i, i)


def read_normalised(arr: Any, box: Box, normalizer: Normalizer) -> np.ndarray:
    """(C, *box.shape) float32 normalised raw of ``box``; outside the volume the volume is mirrored at its border
    (or zero, with ``[data] raw_padding = "zeros"``).

    The mirror gives the network the same kind of context at the volume border as inside it (zeros there look
    like a dark structure the network never saw inside a volume). It is taken about the whole volume's border,
    so any box, tile or block reads the same values as one whole mirrored volume would give.
    """
    spatial = tuple(int(s) for s in arr.shape[-3:])
    if not normalizer.mirror:
        return _read_zero_padded(arr, box, normalizer, spatial)
    index = [mirror_indices(b, e, s) for b, e, s in zip(box.begin, box.end, spatial)]
    source = Box(tuple(int(i.min()) for i in index), tuple(int(i.max()) + 1 for i in index))
    data = arr[trailing(source.slices)] if isinstance(arr, np.ndarray) else read_box(arr, source)
    data = np.asarray(data)
    if data.ndim == 3:
        data = data[None]
    out = normalizer(data)
    if source.shape != box.shape or source.begin != box.begin:
        out = out[np.ix_(np.arange(out.shape[0]), *(i - b for i, b in zip(index, source.begin)))]
    return np.ascontiguousarray(out, dtype=np.float32)


def _read_zero_padded(arr: Any, box: Box, normalizer: Normalizer, spatial: tuple[int, ...]) -> np.ndarray:
    """``[data] raw_padding = "zeros"``: normalised raw inside the volume, 0 outside it."""
    channels = 1 if arr.ndim == 3 else int(arr.shape[0])
    out = np.zeros((channels,) + box.shape, dtype=np.float32)
    inner = box.intersect(Box.from_shape(spatial))
    if not inner.empty:
        data = np.asarray(arr[trailing(inner.slices)] if isinstance(arr, np.ndarray) else read_box(arr, inner))
        out[(slice(None), *inner.relative_to(box))] = normalizer(data if data.ndim == 4 else data[None])
    return out


def list_sample_paths(entries: tuple[str, ...] | list[str], what: str = "train_data") -> list[str]:
    """Expand ``[data] train_data``-style entries: groups, or folders of ``*.zarr`` groups."""
    paths: list[str] = []
    for entry in entries:
        p = Path(entry)
        if not p.exists():
            raise ConfigError(f"[data] {what} entry {entry} does not exist; give zarr groups or folders of them")
        if p.suffix in (".zarr", ".zip") or (p / "zarr.json").exists() or (p / ".zgroup").exists():
            paths.append(str(p))
        elif p.is_dir():
            found = sorted(str(c) for c in p.glob("*.zarr"))
            if not found:
                raise ConfigError(f"[data] {what} entry {entry} is a folder without *.zarr samples")
            paths += found
        else:
            raise ConfigError(f"[data] {what} entry {entry} does not exist; give zarr groups or folders of them")
    if not paths:
        raise ConfigError(f"[data] {what} is empty; list the zarr samples to train on")
    return paths


class TrainingSample:
    """One zarr sample: lazy (or in-memory) raw and GT plus foreground / near-overlap voxel lists."""

    def __init__(self, path: str, data: DataConfig, *, overlap_radius: int = 3, max_num_inst: int = 2,
                 seed: int = 0) -> None:
        self.path = str(path)
        self.data = data
        self.raw_spec = f"{self.path}/{data.raw_key}"
        self.gt_spec = f"{self.path}/{data.gt_key}"
        raw, gt = open_array(self.raw_spec), open_array(self.gt_spec)
        if raw.ndim not in (3, 4) or gt.ndim not in (3, 4):
            raise InputDataError(f"{self.raw_spec} and {self.gt_spec} must be (C, Z, Y, X)/(Z, Y, X) arrays; got "
                                 f"shapes {raw.shape} and {gt.shape}")
        self.shape = tuple(int(s) for s in raw.shape[-3:])
        if tuple(gt.shape[-3:]) != self.shape:
            raise InputDataError(f"{self.gt_spec} has spatial shape {tuple(gt.shape[-3:])} but the raw has "
                                 f"{self.shape}")
        self.num_channels = 1 if raw.ndim == 3 else int(raw.shape[0])
        if self.num_channels != data.num_channels:
            raise InputDataError(f"{self.raw_spec} has {self.num_channels} channels but [data] num_channels = "
                                 f"{data.num_channels}")
        if np.dtype(gt.dtype).kind not in "ui":
            raise InputDataError(f"{self.gt_spec} must hold integer instance ids, got dtype {gt.dtype}")
        self.in_memory = (raw.nbytes + gt.nbytes) <= IN_MEMORY_BYTES
        self.normalizer = fit(raw, data, self.raw_spec)
        check_spread(raw, self.normalizer, data, f"training sample {self.raw_spec}")
        self._raw: Any = None
        self._gt: Any = None
        self.fg_points, self.overlap_points = self._points(gt, overlap_radius, max_num_inst, seed)
        logger.info("training sample %s: %s, %d foreground and %d near-overlap voxels listed", self.path,
                    self.shape, len(self.fg_points), len(self.overlap_points))

    def __getstate__(self) -> dict[str, Any]:
        state = dict(self.__dict__)
        state["_raw"] = state["_gt"] = None  # workers open the arrays themselves
        return state

    def _points(self, gt: Any, radius: int, max_num_inst: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
        rng = np.random.default_rng(seed)
        slab = max(1, (2 ** 24) // max(1, self.shape[1] * self.shape[2]))
        fg, ov = [], []
        for z0 in range(0, self.shape[0], slab):
            z1 = min(self.shape[0], z0 + slab)
            lo, hi = max(0, z0 - radius), min(self.shape[0], z1 + radius)
            block = np.asarray(gt[..., lo:hi, :, :])
            if block.ndim == 3:
                block = block[None]
            count = (block != 0).sum(axis=0)
            inner = slice(z0 - lo, z1 - lo)
            fg.append(np.argwhere(count[inner] > 0).astype(np.int32) + np.array([z0, 0, 0], np.int32))
            overlap = count >= min(2, max_num_inst + 1)
            if overlap.any() and radius > 0:
                overlap = ndimage.binary_dilation(overlap, iterations=radius)
            ov.append(np.argwhere(overlap[inner]).astype(np.int32) + np.array([z0, 0, 0], np.int32))
        out = []
        for parts in (fg, ov):
            pts = np.concatenate(parts) if parts else np.zeros((0, 3), np.int32)
            if len(pts) > MAX_POINTS:
                pts = pts[np.sort(rng.choice(len(pts), MAX_POINTS, replace=False))]
            out.append(pts)
        return out[0], out[1]

    def _arrays(self) -> tuple[Any, Any]:
        if self._raw is None:
            raw: Any = open_array(self.raw_spec)
            gt: Any = open_array(self.gt_spec)
            if self.in_memory:
                raw, gt = np.asarray(raw[...]), np.asarray(gt[...])
            self._raw, self._gt = raw, gt
        return self._raw, self._gt

    def read_raw(self, box: Box) -> np.ndarray:
        """(C, *box.shape) float32 normalised raw; mirrored at the volume border (:func:`read_normalised`)."""
        raw, _ = self._arrays()
        return read_normalised(raw, box, self.normalizer)

    def read_gt(self, box: Box) -> np.ndarray:
        """(K, *box.shape) int64 instance channels; background outside the volume."""
        _, gt = self._arrays()
        k = 1 if gt.ndim == 3 else int(gt.shape[0])
        out = np.zeros((k,) + box.shape, dtype=np.int64)
        inner = box.intersect(Box.from_shape(self.shape))
        if not inner.empty:
            data = gt[trailing(inner.slices)] if isinstance(gt, np.ndarray) else read_box(gt, inner)
            data = np.asarray(data)
            if data.ndim == 3:
                data = data[None]
            out[(slice(None), *inner.relative_to(box))] = data
        return out


def choose_output_begin(sample: TrainingSample, geometry: CropGeometry, probabilities: tuple[float, float, float],
                        rng: np.random.Generator) -> tuple[int, int, int]:
    """Begin of a random output window: it contains a foreground / near-overlap / uniformly drawn voxel."""
    kind = int(rng.choice(3, p=np.asarray(probabilities) / sum(probabilities)))
    order = {0: (sample.fg_points,), 1: (sample.overlap_points, sample.fg_points), 2: ()}[kind]
    point: np.ndarray | None = None
    for candidates in order:
        if len(candidates):
            point = candidates[rng.integers(len(candidates))]
            break
    if point is None:
        point = np.array([rng.integers(s) for s in sample.shape])
    begin = [int(p) - int(rng.integers(o)) for p, o in zip(point, geometry.output_shape)]
    # inside the volume where it is large enough (the loss then never sees voxels outside it)
    return tuple(min(max(b, 0), s - o) if s >= o else b
                 for b, s, o in zip(begin, sample.shape, geometry.output_shape))  # type: ignore[return-value]
