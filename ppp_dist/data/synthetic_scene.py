"""Scenes: seeded, continuous object geometry that rasterises any sub-box exactly.

A :class:`Scene` draws all object parameters (curves, radii, ellipsoids, colours) from its seed when it is
built, independent of any raster. :meth:`Scene.render` then rasterises an arbitrary voxel box, so that

    render(whole volume) == stitch(render(b) for b in any tiling of the volume)      (bit for bit)

This holds because

* every voxel value is a pure function of the voxel's integer coordinates and the object parameters,
  computed with element-wise ``+ - * /`` and comparisons only (no BLAS, no transcendental ufuncs whose SIMD
  and scalar paths may round differently, no reductions whose summation order depends on the box);
* objects are combined with order-independent rules (max, min with ties broken by id) or in ascending id
  order (sums), and an object that does not cover a voxel leaves it untouched;
* raw noise comes from a counter-based RNG (Philox) keyed by ``(seed, kind)`` with the counter set to the
  index of a tile of a *fixed* tile grid (``Scene.noise_tile``); a render draws whole tiles and crops, so
  every box sees the same values.

The scene is defined on the whole integer lattice; the volume is ``Box.from_shape(scene.shape)``.
``render`` only rasterises objects whose bounding box intersects the requested box, so the memory per box
does not grow with the volume. The index is a vectorised scan of the (N, 3) bounding-box arrays: O(N)
comparisons per box, well under a millisecond for 10^5 objects; a grid index would be the next step.

Instance ids are 1..N in generation order. Each object lives in one instance channel ("layer"):
``channels="per_instance"`` gives object i its own channel (K = N, like the FlyLight ground truth);
``channels="packed"`` assigns channels by greedy colouring of objects whose footprints (for tubes: the
boxes of their capsules) intersect, so K is bounded by the local overlap depth and known before
anything is rendered (what a blockwise writer needs); ``"flat"`` puts everything in one channel (for
scenes that never overlap).
"""

from __future__ import annotations

import abc
import logging
import zlib
from collections.abc import Sequence
from typing import Any, Literal

import numpy as np

from ppp_dist.data import Sample
from ppp_dist.geometry import Box

logger = logging.getLogger(__name__)

ChannelMode = Literal["per_instance", "packed", "flat"]
Shape3 = tuple[int, int, int]

#: Noise tiles: a fixed grid, independent of the requested box (see module docstring).
NOISE_TILE_3D: Shape3 = (32, 32, 32)
NOISE_TILE_2D: Shape3 = (1, 128, 128)
_MAX_ID = int(np.iinfo(np.uint16).max)
_U64 = (1 << 64) - 1


def normalize_shape(shape: Sequence[int], *, planar: bool = False) -> Shape3:
    """Return a (Z, Y, X) shape; 2-tuples get Z = 1.

    Parameters
    ----------
    shape
        (Z, Y, X) or (Y, X), positive ints.
    planar
        If True the scene is 2D and Z must be 1.
    """
    dims = tuple(int(s) for s in shape)
    if len(dims) == 2:
        dims = (1, *dims)
    if len(dims) != 3 or any(s < 1 for s in dims):
        raise ValueError(f"shape must be (Z, Y, X) or (Y, X) with positive sizes, got {tuple(shape)}")
    if planar and dims[0] != 1:
        raise ValueError(f"a 2D scene needs Z = 1, got shape {tuple(shape)}; pass (Y, X) or (1, Y, X)")
    return dims


def check_range(name: str, value: Sequence[float], minimum: float) -> tuple[float, float]:
    """Validate a ``(low, high)`` parameter range with ``minimum <= low <= high``."""
    low, high = (float(v) for v in value)
    if not minimum <= low <= high:
        raise ValueError(f"{name} must be (low, high) with {minimum} <= low <= high, got {tuple(value)}")
    return low, high


def count_for_volume(n: int | None, shape: Shape3, per_voxels: float, reference: int) -> int:
    """Object count: ``n`` if given, else ``reference`` objects per ``per_voxels`` voxels (at least 1)."""
    if n is not None:
        if int(n) < 0:
            raise ValueError(f"the number of objects must be >= 0, got {n}")
        return int(n)
    volume = float(np.prod(shape, dtype=np.float64))
    return max(1, int(round(reference * volume / per_voxels)))


def voxel_grid(box: Box) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Broadcastable float64 voxel coordinates (Z, 1, 1), (1, Y, 1), (1, 1, X) of ``box``."""
    z, y, x = (np.arange(b, e, dtype=np.float64) for b, e in zip(box.begin, box.end))
    return z[:, None, None], y[None, :, None], x[None, None, :]


def random_unit(rng: np.random.Generator, planar: bool) -> np.ndarray:
    """A uniformly random unit vector (3,) float64; in the YX plane if ``planar``."""
    while True:
        v = rng.normal(size=3)
        if planar:
            v[0] = 0.0
        norm = float(np.sqrt(v @ v))
        if norm > 1e-6:
            return v / norm


def _boxes_meet(lo_a: np.ndarray, hi_a: np.ndarray, lo_b: np.ndarray, hi_b: np.ndarray) -> bool:
    """True if any box of (A, 3) ``lo_a``/``hi_a`` intersects any box of (B, 3) ``lo_b``/``hi_b``."""
    return bool(np.any(np.all(lo_a[:, None] < hi_b[None], axis=2)
                       & np.all(hi_a[:, None] > lo_b[None], axis=2)))


def assign_layers(lo: np.ndarray, hi: np.ndarray, mode: ChannelMode,
                  footprints: Sequence[tuple[np.ndarray, np.ndarray]] | None = None) -> np.ndarray:
    """Instance channel of every object.

    Parameters
    ----------
    lo, hi
        (N, 3) int64 half-open bounding boxes of the objects, in id order.
    mode
        ``"per_instance"``: object i -> channel i. ``"flat"``: all in channel 0. ``"packed"``: greedy
        colouring in id order, each object takes the lowest channel not used by an earlier object that
        it *may touch*: their bounding boxes intersect and, if given, so do two of their footprint
        boxes. Two objects in one channel therefore never share a voxel.
    footprints
        Per object ``(lo (F_i, 3), hi (F_i, 3))`` int64 boxes covering all its voxels (e.g. one per
        capsule of a tube); tighter than the bounding box for thin, curved objects.

    Returns
    -------
    np.ndarray
        (N,) int64 channel indices.
    """
    n = len(lo)
    if mode == "per_instance":
        return np.arange(n, dtype=np.int64)
    if mode == "flat":
        return np.zeros(n, dtype=np.int64)
    if mode != "packed":
        raise ValueError(f"channels must be 'per_instance', 'packed' or 'flat', got {mode!r}")
    layers = np.zeros(n, dtype=np.int64)
    for i in range(1, n):  # O(N) vectorised bbox test per object; memory O(F_i x F_j)
        near = np.nonzero(np.all(lo[:i] < hi[i], axis=1) & np.all(hi[:i] > lo[i], axis=1))[0]
        if footprints is not None:
            near = np.array([j for j in near if _boxes_meet(*footprints[i], *footprints[int(j)])],
                            dtype=np.int64)
        used = np.unique(layers[near])
        free = np.nonzero(used != np.arange(len(used)))[0]
        layers[i] = free[0] if len(free) else len(used)
    return layers


def tile_noise(seed: int, stream: int, box: Box, channels: int, tile: Shape3) -> np.ndarray:
    """Standard normal noise for ``box`` from a fixed tile grid; identical for any box.

    Parameters
    ----------
    seed, stream
        Philox key; ``stream`` separates scene kinds that share a seed.
    box
        Voxel box (any position, also outside the volume).
    channels
        C, the number of independent noise channels.
    tile
        Tile shape of the fixed grid; tile (tz, ty, tx) covers ``[t * tile, (t + 1) * tile)`` and is
        drawn whole from ``Philox(key=(seed, stream), counter=(0, tz, ty, tx))``.

    Returns
    -------
    np.ndarray
        (C, *box.shape) float32.
    """
    out = np.empty((channels, *box.shape), dtype=np.float32)
    if box.empty:
        return out
    first = [b // t for b, t in zip(box.begin, tile)]
    last = [(e - 1) // t for e, t in zip(box.end, tile)]
    key = np.array([seed & _U64, stream & _U64], dtype=np.uint64)
    for tz in range(first[0], last[0] + 1):
        for ty in range(first[1], last[1] + 1):
            for tx in range(first[2], last[2] + 1):
                counter = np.array([0, tz & _U64, ty & _U64, tx & _U64], dtype=np.uint64)
                gen = np.random.Generator(np.random.Philox(key=key, counter=counter))
                values = gen.standard_normal((channels, *tile), dtype=np.float32)
                tile_box = Box.from_shape(tile, begin=(tz * tile[0], ty * tile[1], tx * tile[2]))
                part = tile_box.intersect(box)
                out[(slice(None), *part.relative_to(box))] = values[(slice(None),
                                                                     *part.relative_to(tile_box))]
    return out


class Scene(abc.ABC):
    """Base class of the synthetic scenes; subclasses draw objects and rasterise them.

    Attributes
    ----------
    kind : str
        Registry name ("tubes", "worms", "nuclei2d", "nuclei3d").
    shape : tuple[int, int, int]
        Volume (Z, Y, X) in voxels.
    seed : int
        Seed of all random draws.
    num_channels : int
        C, raw channels.
    num_layers : int
        K, instance channels.
    num_instances : int
        N; ids are 1..N in generation order.
    bbox_lo, bbox_hi : np.ndarray
        (N, 3) int64 half-open voxel bounding boxes of the objects (possibly beyond the volume).
    layers : np.ndarray
        (N,) int64 instance channel of each object.
    """

    kind: str = ""

    def __init__(self, shape: Shape3, seed: int, num_channels: int, noise_sigma: float,
                 params: dict[str, Any]) -> None:
        if not isinstance(seed, (int, np.integer)) or not 0 <= int(seed) <= _U64:
            raise ValueError(f"seed must be an int in [0, 2**64), got {seed!r}")
        if noise_sigma < 0:
            raise ValueError(f"noise_sigma must be >= 0, got {noise_sigma}")
        self.shape: Shape3 = shape
        self.seed = int(seed)
        self.num_channels = num_channels
        self.noise_sigma = float(noise_sigma)
        self.noise_tile: Shape3 = NOISE_TILE_2D if shape[0] == 1 else NOISE_TILE_3D
        self.params = dict(params)
        self.bbox_lo = np.zeros((0, 3), dtype=np.int64)
        self.bbox_hi = np.zeros((0, 3), dtype=np.int64)
        self.layers = np.zeros(0, dtype=np.int64)

    def _set_objects(self, lo: np.ndarray, hi: np.ndarray, channels: ChannelMode,
                     footprints: Sequence[tuple[np.ndarray, np.ndarray]] | None = None) -> None:
        """Register the (N, 3) bounding boxes and assign instance channels; call once from __init__.

        ``footprints`` (see :func:`assign_layers`) let thin objects pack into fewer channels.
        """
        if len(lo) > _MAX_ID:
            raise ValueError(f"{len(lo)} objects exceed the uint16 id range (65535); use a smaller "
                             f"volume or a lower object count")
        self.bbox_lo = np.asarray(lo, dtype=np.int64).reshape(-1, 3)
        self.bbox_hi = np.asarray(hi, dtype=np.int64).reshape(-1, 3)
        self.layers = assign_layers(self.bbox_lo, self.bbox_hi, channels, footprints)
        logger.debug("%s scene %s seed %d: %d objects in %d channels", self.kind, self.shape,
                     self.seed, self.num_instances, self.num_layers)

    @property
    def num_instances(self) -> int:
        return int(len(self.bbox_lo))

    @property
    def num_layers(self) -> int:
        return int(self.layers.max()) + 1 if len(self.layers) else 1

    @property
    def volume(self) -> Box:
        """The volume box ``[0, shape)``."""
        return Box.from_shape(self.shape)

    def describe(self) -> dict[str, Any]:
        """JSON-compatible description (kind, shape, seed, parameters, counts) for provenance attrs."""
        return {"kind": self.kind, "shape": list(self.shape), "seed": self.seed,
                "params": self.params, "num_instances": self.num_instances,
                "num_channels": self.num_channels, "num_layers": self.num_layers}

    def objects_in(self, box: Box) -> np.ndarray:
        """Indices (ascending, = id - 1) of the objects whose bounding box intersects ``box``."""
        if box.empty or not self.num_instances:
            return np.zeros(0, dtype=np.int64)
        hit = (np.all(self.bbox_lo < np.asarray(box.end), axis=1)
               & np.all(self.bbox_hi > np.asarray(box.begin), axis=1))
        return np.nonzero(hit)[0]

    def render(self, box: Box | None = None) -> tuple[np.ndarray, np.ndarray]:
        """Rasterise ``box`` (default: the whole volume).

        Parameters
        ----------
        box
            3D voxel box in (Z, Y, X); may lie partly or wholly outside the volume.

        Returns
        -------
        raw : np.ndarray
            (C, *box.shape) float32 in [0, 1].
        instances : np.ndarray
            (K, *box.shape) uint16 channel stack, ids 1..N.
        """
        box = self.volume if box is None else box
        if box.ndim != 3:
            raise ValueError(f"render needs a 3D (Z, Y, X) box, got {box}")
        box = Box(box.begin, tuple(max(b, e) for b, e in zip(box.begin, box.end)))
        instances = np.zeros((self.num_layers, *box.shape), dtype=np.uint16)
        signal = np.zeros((self.num_channels, *box.shape), dtype=np.float32)
        if not box.empty:
            self._render_objects(box, self.objects_in(box), signal, instances)
        noise = tile_noise(self.seed, zlib.crc32(self.kind.encode()), box, self.num_channels,
                           self.noise_tile)
        raw = self._compose_raw(signal, noise)
        np.clip(raw, 0.0, 1.0, out=raw)
        return raw, instances

    def to_sample(self) -> Sample:
        """Render the whole volume as a :class:`~ppp_dist.data.Sample`."""
        raw, instances = self.render()
        return Sample(raw=raw, instances=instances,
                      name=f"{self.kind} shape={self.shape} seed={self.seed}")

    @abc.abstractmethod
    def _render_objects(self, box: Box, indices: np.ndarray, signal: np.ndarray,
                        instances: np.ndarray) -> None:
        """Paint objects ``indices`` (ascending) into ``signal`` (C, *box) and ``instances`` (K, *box)."""

    @abc.abstractmethod
    def _compose_raw(self, signal: np.ndarray, noise: np.ndarray) -> np.ndarray:
        """Raw (C, *box) float32 from the object signal and standard normal noise (clipped later).

        Both inputs are scratch arrays and may be overwritten (in-place arithmetic keeps the peak
        memory of a block low).
        """
