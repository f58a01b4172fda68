"""Block geometry: boxes, the block grid, read boxes with halo, ownership and chunk alignment.

All sizes are voxels in (Z, Y, X) order (2D data is 3D with Z = 1; any number of axes works). Pure Python
and NumPy only: no zarr, no dask.

The volume (or a region of interest inside it) is cut into non-overlapping *write boxes* in raster (C)
order; the last block along an axis is shrunk to the volume end. Each block reads its write box grown by
the halo, clipped to the volume: context is kept where it exists and never padded here (callers that need
a fixed input size pad by ``BlockSpec.pad_before`` / ``pad_after``)::

    volume      |-----------------------------------------|
    block 0     |wwwwwwwwww|hhh|                             read box clipped at the volume start
    block 1          |hhh|wwwwwwwwww|hhh|
    block 2                     |hhh|wwwwwwwwww|hhh|
    last (shrunk)                          |hhh|wwwww|       write box clipped at the volume end

Ownership: every voxel, and every patch centre, belongs to exactly one block, the one whose write box
contains it. Each write box must be a whole number of output chunks (or shards), except that the last one
may end at the volume end; otherwise two blocks write into one chunk and zarr silently loses data.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from types import EllipsisType

import numpy as np

from ppp_dist.errors import ConfigError, StorageError

logger = logging.getLogger(__name__)

Shape = tuple[int, ...]
Index = tuple[EllipsisType | slice, ...]


def trailing(slices: Sequence[slice]) -> Index:
    """``(..., *slices)``: an index of the trailing (spatial) axes that keeps the leading ones (channels)."""
    return (..., *slices)


@dataclass(frozen=True)
class Box:
    """Half-open axis-aligned box ``[begin, end)`` in voxels, one entry per spatial axis."""

    begin: Shape
    end: Shape

    def __post_init__(self) -> None:
        if len(self.begin) != len(self.end):
            raise ValueError(f"begin {self.begin} and end {self.end} differ in dimensionality")
        object.__setattr__(self, "begin", tuple(int(b) for b in self.begin))
        object.__setattr__(self, "end", tuple(int(e) for e in self.end))

    @classmethod
    def from_shape(cls, shape: Shape, begin: Shape | None = None) -> Box:
        begin = tuple(0 for _ in shape) if begin is None else tuple(begin)
        return cls(begin, tuple(b + s for b, s in zip(begin, shape)))

    @property
    def ndim(self) -> int:
        return len(self.begin)

    @property
    def shape(self) -> Shape:
        return tuple(max(0, e - b) for b, e in zip(self.begin, self.end))

    @property
    def size(self) -> int:
        n = 1
        for s in self.shape:
            n *= s
        return n

    @property
    def empty(self) -> bool:
        return any(e <= b for b, e in zip(self.begin, self.end))

    @property
    def slices(self) -> tuple[slice, ...]:
        return tuple(slice(b, e) for b, e in zip(self.begin, self.end))

    def intersect(self, other: Box) -> Box:
        begin = tuple(max(a, b) for a, b in zip(self.begin, other.begin))
        end = tuple(max(lo, min(a, b)) for lo, a, b in zip(begin, self.end, other.end))
        return Box(begin, end)

    def grow(self, amount: Shape) -> Box:
        """Grow by ``amount`` voxels on every side (negative values shrink)."""
        return Box(tuple(b - a for b, a in zip(self.begin, amount)),
                   tuple(e + a for e, a in zip(self.end, amount)))

    def shift(self, offset: Shape) -> Box:
        return Box(tuple(b + o for b, o in zip(self.begin, offset)),
                   tuple(e + o for e, o in zip(self.end, offset)))

    def contains(self, point: Shape) -> bool:
        return all(b <= p < e for b, p, e in zip(self.begin, point, self.end))

    def contains_box(self, other: Box) -> bool:
        """True if ``other`` lies inside this box (an empty ``other`` counts as inside)."""
        return other.empty or all(sb <= ob and oe <= se for sb, ob, oe, se in
                                  zip(self.begin, other.begin, other.end, self.end))

    def relative_to(self, outer: Box) -> tuple[slice, ...]:
        """Slices selecting this box inside an array that covers ``outer``."""
        return tuple(slice(b - o, e - o) for b, e, o in zip(self.begin, self.end, outer.begin))

    def __str__(self) -> str:
        return "[" + ", ".join(f"{b}:{e}" for b, e in zip(self.begin, self.end)) + "]"


@dataclass(frozen=True)
class BlockSpec:
    """One block of the grid: what it owns (write box) and what it reads (read box).

    Attributes
    ----------
    block_id : int
        Linear C-order index of ``grid_index`` in the grid (0 ... num_blocks - 1).
    grid_index : tuple of int
        Position of the block in the grid, one entry per axis.
    write_box : Box
        The core this block owns and writes, clipped to the volume (or ROI).
    read_box : Box
        ``write_box`` grown by ``halo`` and clipped to the volume: the data that exists.
    read_box_unclipped : Box
        ``write_box`` grown by ``halo`` without clipping; may leave the volume.
    halo : tuple of int
        Context in voxels on each side, per axis.
    """

    block_id: int
    grid_index: Shape
    write_box: Box
    read_box: Box
    read_box_unclipped: Box
    halo: Shape

    def owns(self, point: Sequence[int]) -> bool:
        """True if ``point`` (a voxel or a patch centre, in volume coordinates) is in the write box."""
        return self.write_box.contains(tuple(point))

    @property
    def pad_before(self) -> Shape:
        """Voxels missing before ``read_box`` to reach ``read_box_unclipped``, per axis."""
        return tuple(r - u for r, u in zip(self.read_box.begin, self.read_box_unclipped.begin))

    @property
    def pad_after(self) -> Shape:
        """Voxels missing after ``read_box`` to reach ``read_box_unclipped``, per axis."""
        return tuple(u - r for r, u in zip(self.read_box.end, self.read_box_unclipped.end))

    @property
    def write_in_read(self) -> tuple[slice, ...]:
        """Slices selecting the write box inside an array that covers ``read_box``."""
        return self.write_box.relative_to(self.read_box)

    def crop_to_write(self, data: np.ndarray) -> np.ndarray:
        """Crop ``data`` covering ``read_box`` (trailing axes; leading axes such as channels are kept)."""
        nd = self.write_box.ndim
        if tuple(data.shape[data.ndim - nd:]) != self.read_box.shape:
            raise ValueError(f"block {self.block_id}: data of shape {data.shape} does not cover the "
                             f"read box {self.read_box} of shape {self.read_box.shape}")
        return data[trailing(self.write_in_read)]


def _as_shape(value: int | Sequence[int], ndim: int, what: str, *, minimum: int) -> Shape:
    """Broadcast an int or validate a sequence to a tuple of ``ndim`` ints >= ``minimum``."""
    if isinstance(value, (int, np.integer)):
        shape = (int(value),) * ndim
    else:
        shape = tuple(int(v) for v in value)
    if len(shape) != ndim:
        raise ConfigError(f"{what} {shape} has {len(shape)} axes but the volume has {ndim}; "
                          f"give one value per axis (Z, Y, X)")
    if any(s < minimum for s in shape):
        raise ConfigError(f"{what} {shape} must be >= {minimum} in every axis")
    return shape


def grid_shape(volume_shape: Sequence[int], block_shape: Sequence[int]) -> Shape:
    """Number of blocks per axis: ``ceil(volume / block)``."""
    return tuple(-(-int(v) // int(b)) for v, b in zip(volume_shape, block_shape))


@dataclass(frozen=True)
class BlockGrid:
    """The block grid over a volume or an ROI; blocks are computed on demand (no list in memory).

    Parameters
    ----------
    volume_shape : tuple of int
        Spatial shape of the whole volume, e.g. ``(Z, Y, X)``.
    block_shape : int or tuple of int
        Write box shape (the last block per axis may be smaller).
    halo : int or tuple of int
        Context voxels added on each side to form the read box.
    roi : Box, optional
        Region to tile, inside the volume; default the whole volume.
    """

    volume_shape: Shape
    block_shape: Shape
    halo: Shape
    roi: Box

    def __init__(self, volume_shape: Sequence[int], block_shape: int | Sequence[int],
                 halo: int | Sequence[int] = 0, *, roi: Box | None = None) -> None:
        vol = tuple(int(v) for v in volume_shape)
        if not vol or any(v < 1 for v in vol):
            raise ConfigError(f"volume shape {vol} must have at least one axis and be >= 1 in every axis")
        nd = len(vol)
        block = _as_shape(block_shape, nd, "block shape", minimum=1)
        halo_t = _as_shape(halo, nd, "halo", minimum=0)
        whole = Box.from_shape(vol)
        roi = whole if roi is None else roi
        if roi.ndim != nd or roi.empty or not whole.contains_box(roi):
            raise ConfigError(f"roi {roi} must be a non-empty box inside the volume {whole} "
                              f"(shape {vol})")
        object.__setattr__(self, "volume_shape", vol)
        object.__setattr__(self, "block_shape", block)
        object.__setattr__(self, "halo", halo_t)
        object.__setattr__(self, "roi", roi)

    @property
    def ndim(self) -> int:
        return len(self.volume_shape)

    @property
    def shape(self) -> Shape:
        """Number of blocks per axis."""
        return grid_shape(self.roi.shape, self.block_shape)

    @property
    def num_blocks(self) -> int:
        return math.prod(self.shape)

    def __len__(self) -> int:
        return self.num_blocks

    def __iter__(self) -> Iterator[BlockSpec]:
        for block_id in range(self.num_blocks):
            yield self.block(block_id)

    def __getitem__(self, block_id: int) -> BlockSpec:
        return self.block(block_id)

    def block(self, block: int | Sequence[int]) -> BlockSpec:
        """The ``BlockSpec`` for a linear block id or a grid index."""
        gshape = self.shape
        if isinstance(block, (int, np.integer)):
            if not 0 <= block < self.num_blocks:
                raise IndexError(f"block id {block} outside the grid of {self.num_blocks} blocks")
            index = tuple(int(i) for i in np.unravel_index(int(block), gshape))
        else:
            index = tuple(int(i) for i in block)
            if len(index) != self.ndim or not all(0 <= i < g for i, g in zip(index, gshape)):
                raise IndexError(f"grid index {index} outside the grid {gshape}")
        begin = tuple(r + i * b for r, i, b in zip(self.roi.begin, index, self.block_shape))
        write = Box(begin, tuple(min(s + b, e) for s, b, e in
                                 zip(begin, self.block_shape, self.roi.end)))
        unclipped = write.grow(self.halo)
        read = unclipped.intersect(Box.from_shape(self.volume_shape))
        block_id = int(np.ravel_multi_index(index, gshape))
        return BlockSpec(block_id, index, write, read, unclipped, self.halo)

    def owners_of(self, points: np.ndarray) -> np.ndarray:
        """Block ids owning each point.

        Parameters
        ----------
        points : ndarray, shape (N, ndim), integer
            Voxel coordinates or patch centres in volume coordinates.

        Returns
        -------
        ndarray, shape (N,), int64
            The owning block id of each point.
        """
        pts = np.asarray(points, dtype=np.int64).reshape(-1, self.ndim)
        lo = np.asarray(self.roi.begin, dtype=np.int64)
        hi = np.asarray(self.roi.end, dtype=np.int64)
        outside = np.any((pts < lo) | (pts >= hi), axis=1)
        if outside.any():
            bad = tuple(int(v) for v in pts[np.argmax(outside)])
            raise ValueError(f"point {bad} lies outside the tiled region {self.roi}")
        index = (pts - lo) // np.asarray(self.block_shape, dtype=np.int64)
        return np.ravel_multi_index(tuple(index.T), self.shape).astype(np.int64)

    def owner_of(self, point: Sequence[int]) -> int:
        """Block id whose write box contains ``point``."""
        return int(self.owners_of(np.asarray([tuple(point)]))[0])

    def neighbor_ids(self, block: int | BlockSpec) -> list[int]:
        """Ids of all blocks touching ``block`` by a face, an edge or a corner (26 in 3D), ascending."""
        index = block.grid_index if isinstance(block, BlockSpec) else self.block(block).grid_index
        return _neighbor_ids(index, self.shape)

    def summary(self) -> str:
        """One line describing the grid, for logs."""
        return (f"{self.num_blocks} blocks ({' x '.join(map(str, self.shape))}) of "
                f"{self.block_shape} voxels with halo {self.halo} over {self.roi} of a "
                f"{self.volume_shape} volume")


def tile(volume_shape: Sequence[int], block_shape: int | Sequence[int],
         halo: int | Sequence[int] = 0, *, roi: Box | None = None) -> list[BlockSpec]:
    """Cut a volume (or ``roi``) into non-overlapping write boxes, in raster order.

    Parameters
    ----------
    volume_shape : tuple of int
        Spatial shape ``(Z, Y, X)`` (any number of axes).
    block_shape : int or tuple of int
        Write box shape; the last block per axis is shrunk to the volume (ROI) end.
    halo : int or tuple of int
        Context voxels per side; read boxes are clipped to the volume, not to the ROI.
    roi : Box, optional
        Region to cover; default the whole volume.

    Returns
    -------
    list of BlockSpec
        ``result[i].block_id == i``; the write boxes cover the ROI exactly once.
    """
    return list(BlockGrid(volume_shape, block_shape, halo, roi=roi))


def owner_of(point: Sequence[int], volume_shape: Sequence[int], block_shape: int | Sequence[int],
             roi: Box | None = None) -> int:
    """Id of the block whose write box contains ``point`` (``ValueError`` outside the tiled region)."""
    return BlockGrid(volume_shape, block_shape, roi=roi).owner_of(point)


def _neighbor_ids(index: Shape, gshape: Shape) -> list[int]:
    ids = []
    for delta in np.ndindex(*(3,) * len(gshape)):
        other = tuple(i + d - 1 for i, d in zip(index, delta))
        if other != index and all(0 <= o < g for o, g in zip(other, gshape)):
            ids.append(int(np.ravel_multi_index(other, gshape)))
    return ids


def neighbors(spec: BlockSpec, grid: BlockGrid | Sequence[BlockSpec]) -> list[BlockSpec]:
    """Face, edge and corner neighbours of ``spec`` (26 in the 3D interior), in raster order.

    ``grid`` is a ``BlockGrid`` or the list returned by ``tile`` (indexed by block id).
    """
    if isinstance(grid, BlockGrid):
        return [grid.block(i) for i in grid.neighbor_ids(spec)]
    gshape = tuple(i + 1 for i in grid[-1].grid_index) if grid else ()
    return [grid[i] for i in _neighbor_ids(spec.grid_index, gshape)] if grid else []


def check_chunk_alignment(block_shape: Sequence[int], chunk_shape: Sequence[int],
                          volume_shape: Sequence[int], name: str, *, roi: Box | None = None,
                          unit: str = "chunk") -> None:
    """Raise ``StorageError`` unless every write box is a whole number of chunks.

    Each write box boundary must be a multiple of the chunk shape (chunks are aligned to the array
    origin), or the volume end. Otherwise two blocks write into the same chunk (read-modify-write) and
    one of the writes is silently lost.

    Parameters
    ----------
    block_shape, chunk_shape, volume_shape : tuple of int
        Spatial shapes, same length (strip channel axes first).
    name : str
        The array, for the message (e.g. ``"volumes/instances in out.zarr"``).
    roi : Box, optional
        Tiled region; its begin must be chunk-aligned too.
    unit : {"chunk", "shard"}
    """
    vol = tuple(int(v) for v in volume_shape)
    block = _as_shape(tuple(block_shape), len(vol), "block shape", minimum=1)
    chunk = tuple(int(c) for c in chunk_shape)
    if len(chunk) != len(vol):
        raise StorageError(f"array {name}: {unit} shape {chunk} has {len(chunk)} spatial axes but the "
                           f"volume {vol} has {len(vol)}; the array does not match the data")
    roi = Box.from_shape(vol) if roi is None else roi
    problems, bad_axes = [], set()
    for ax, (v, b, c, lo, hi) in enumerate(zip(vol, block, chunk, roi.begin, roi.end)):
        n = -(-(hi - lo) // b)
        if lo % c:
            problems.append(f"axis {ax}: the tiled region starts at {lo}, inside a {unit} of {c}")
        elif n > 1 and b % c:
            problems.append(f"axis {ax}: block {b} is not a multiple of {unit} {c}")
        elif hi % c and hi != v:
            problems.append(f"axis {ax}: the tiled region ends at {hi}, inside a {unit} of {c}")
        else:
            continue
        bad_axes.add(ax)
    if problems:
        bigger = tuple(-(-b // c) * c if ax in bad_axes else b
                       for ax, (b, c) in enumerate(zip(block, chunk)))
        smaller = tuple(max(d for d in range(1, min(b, c) + 1) if b % d == 0)
                        if ax in bad_axes else c for ax, (b, c) in enumerate(zip(block, chunk)))
        raise StorageError(
            f"array {name}: write boxes of block shape {block} are not whole {unit}s of {chunk} "
            f"({'; '.join(problems)}), so parallel blocks would overwrite each other's {unit}s; use a "
            f"block shape that is a multiple of the {unit} shape, e.g. {bigger}, or recreate the "
            f"array with {unit}s that divide the block shape, e.g. {smaller}")
