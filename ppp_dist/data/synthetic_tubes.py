"""Curve scenes: crossing neuron-like tubes (3D, FlyLight-like) and crossing worms (2D, BBBC010-like).

Every object is a chain of capsules (a polyline with one radius per segment). A voxel ``p`` belongs to the
object iff ``min_s |p - seg_s|^2 / r_s^2 <= 1``. Curves are persistent random walks (smoothly turning
direction, fixed step) grown in both directions from an *anchor* point drawn uniformly in the volume;
with probability ``cross_prob`` (always for the second object) the anchor snaps to the nearest vertex of an
earlier object's centre line inside the volume (within half the maximal length; for the second object at
any distance), so the two cross there: the voxel nearest the anchor (at most sqrt(3)/2 voxels away) lies
in both objects, since every radius is at least 1. The same argument shows every object has at least one
voxel in the volume, so a scene of N objects renders exactly N ids.
"""

from __future__ import annotations

import abc
import logging
import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from ppp_dist.data.synthetic_scene import (
    ChannelMode,
    Scene,
    Shape3,
    check_range,
    count_for_volume,
    normalize_shape,
    random_unit,
    voxel_grid,
)
from ppp_dist.geometry import Box

logger = logging.getLogger(__name__)

_STEP = 2.0  # voxels between polyline vertices


@dataclass(frozen=True)
class Capsules:
    """One object as S capsules: segment starts ``a`` (S, 3), directions ``ab`` (S, 3), float64."""

    a: np.ndarray
    ab: np.ndarray
    inv_ab2: np.ndarray  # (S,) 1 / |ab|^2 (0 for degenerate segments)
    inv_r2: np.ndarray  # (S,) 1 / r^2
    lo: np.ndarray  # (S, 3) int64 half-open voxel bounding box of each capsule
    hi: np.ndarray

    @classmethod
    def from_polylines(cls, polylines: list[tuple[np.ndarray, np.ndarray]]) -> Capsules:
        """Build from ``(vertices (M, 3), segment radii (M - 1,))`` pairs."""
        a = np.concatenate([v[:-1] for v, _ in polylines])
        b = np.concatenate([v[1:] for v, _ in polylines])
        r = np.concatenate([rad for _, rad in polylines])
        ab = b - a
        ab2 = np.einsum("ij,ij->i", ab, ab)  # construction only: not per voxel
        inv_ab2 = np.divide(1.0, ab2, out=np.zeros_like(ab2), where=ab2 > 0)
        # one voxel of margin: rounding at the bbox border can never drop a voxel inside the capsule
        lo = np.floor(np.minimum(a, b) - r[:, None]).astype(np.int64) - 1
        hi = np.floor(np.maximum(a, b) + r[:, None]).astype(np.int64) + 2
        return cls(a=a, ab=ab, inv_ab2=inv_ab2, inv_r2=1.0 / (r * r), lo=lo, hi=hi)

    def q(self, box: Box) -> np.ndarray:
        """Normalised squared distance ``min_s |p - seg_s|^2 / r_s^2`` over ``box``, float64, inf outside."""
        out = np.full(box.shape, np.inf)
        hit = np.nonzero(np.all(self.lo < np.asarray(box.end), axis=1)
                         & np.all(self.hi > np.asarray(box.begin), axis=1))[0]
        for s in hit:
            sub = Box(tuple(self.lo[s]), tuple(self.hi[s])).intersect(box)
            z, y, x = voxel_grid(sub)
            a0, a1, a2 = self.a[s]
            d0, d1, d2 = self.ab[s]
            pz, py, px = z - a0, y - a1, x - a2
            t = (pz * d0 + py * d1 + px * d2) * self.inv_ab2[s]
            np.clip(t, 0.0, 1.0, out=t)
            dz, dy, dx = pz - t * d0, py - t * d1, px - t * d2
            q = (dz * dz + dy * dy + dx * dx) * self.inv_r2[s]
            view = out[sub.relative_to(box)]
            np.minimum(view, q, out=view)
        return out


def _walk(rng: np.random.Generator, start: np.ndarray, direction: np.ndarray, length: float,
          wiggle: float, planar: bool) -> np.ndarray:
    """Persistent random walk: (M, 3) float64 vertices from ``start``, ``_STEP`` apart."""
    steps = max(1, int(math.ceil(length / _STEP)))
    kicks = rng.normal(scale=wiggle, size=(steps, 3))
    if planar:
        kicks[:, 0] = 0.0
    points = np.empty((steps + 1, 3))
    points[0] = start
    d = direction.astype(np.float64).copy()
    for k in range(steps):
        turned = d + kicks[k]
        norm = math.sqrt(float(turned @ turned))
        d = turned / norm if norm > 1e-9 else d
        points[k + 1] = points[k] + _STEP * d
    return points


def _inside(points: np.ndarray, shape: Shape3) -> np.ndarray:
    """Rows of ``points`` (M, 3) inside the voxel hull [-0.5, S - 0.5] of the volume."""
    upper = np.asarray(shape, dtype=np.float64) - 0.5
    return np.all((points >= -0.5) & (points <= upper), axis=1)


class CurveScene(Scene):
    """Scenes of crossing curved capsule chains; see :class:`TubeScene` and :class:`WormScene`."""

    planar: bool = False

    def __init__(self, shape: Shape3, seed: int, n: int, radius: tuple[float, float],
                 length: tuple[float, float], wiggle: float, max_branches: int, cross_prob: float,
                 taper: bool, channels: ChannelMode, num_channels: int, noise_sigma: float,
                 params: dict) -> None:
        super().__init__(shape, seed, num_channels, noise_sigma, params)
        if not 0.0 <= cross_prob <= 1.0:
            raise ValueError(f"cross_prob must lie in [0, 1], got {cross_prob}")
        rng = np.random.default_rng(self.seed)
        self.objects: list[Capsules] = []
        inside: list[np.ndarray] = []  # per object: main centre-line vertices inside the volume
        inside_lo, inside_hi = np.zeros((n, 3)), np.zeros((n, 3))
        reach = length[1] / 2
        for i in range(n):
            r = rng.uniform(*radius)
            total = rng.uniform(*length)
            anchor = rng.uniform(0.0, np.asarray(shape, dtype=np.float64) - 1.0)
            if i == 1 or (i > 1 and rng.random() < cross_prob):
                anchor = self._snap(anchor, inside, inside_lo[:i], inside_hi[:i],
                                    np.inf if i == 1 else reach)
            d = random_unit(rng, self.planar)
            back = _walk(rng, anchor, -d, total / 2, wiggle, self.planar)
            ahead = _walk(rng, anchor, d, total / 2, wiggle, self.planar)
            main = np.concatenate([back[::-1], ahead[1:]])
            inside.append(main[_inside(main, shape)])  # never empty: holds the anchor
            inside_lo[i], inside_hi[i] = inside[i].min(axis=0), inside[i].max(axis=0)
            polylines = [(main, self._segment_radii(main, r, taper))]
            for _ in range(int(rng.integers(0, max_branches + 1)) if max_branches else 0):
                k = int(rng.integers(1, len(main) - 1)) if len(main) > 2 else 0
                tangent = main[min(k + 1, len(main) - 1)] - main[max(k - 1, 0)]
                start_dir = tangent / max(float(np.sqrt(tangent @ tangent)), 1e-9)
                start_dir = start_dir + 1.5 * random_unit(rng, self.planar)
                start_dir /= max(float(np.sqrt(start_dir @ start_dir)), 1e-9)
                branch = _walk(rng, main[k], start_dir, total * rng.uniform(0.3, 0.6), wiggle,
                               self.planar)
                polylines.append((branch, np.full(len(branch) - 1, max(1.0, 0.7 * r))))
            self.objects.append(Capsules.from_polylines(polylines))
            self._draw_appearance(rng)
        lo = np.array([o.lo.min(axis=0) for o in self.objects]).reshape(-1, 3)
        hi = np.array([o.hi.max(axis=0) for o in self.objects]).reshape(-1, 3)
        self._set_objects(lo, hi, channels, [(o.lo, o.hi) for o in self.objects])

    @staticmethod
    def _snap(point: np.ndarray, inside: list[np.ndarray], box_lo: np.ndarray, box_hi: np.ndarray,
              reach: float) -> np.ndarray:
        """The centre-line vertex of an earlier object nearest to ``point`` if within ``reach``.

        ``inside[j]`` are object j's vertices inside the volume, ``box_lo[j]``/``box_hi[j]`` their
        bounding box (used to skip far objects). Snapping a uniformly drawn anchor to a *nearby* object
        keeps the density uniform in large volumes; a random host anywhere would pile all objects into
        one growing cluster.
        """
        gap = np.maximum(np.maximum(box_lo - point, point - box_hi), 0.0)
        near = np.nonzero(np.sum(gap * gap, axis=1) < reach * reach)[0]
        best, best_d2 = point, reach * reach
        for j in near:
            d2 = np.sum((inside[j] - point) ** 2, axis=1)
            k = int(np.argmin(d2))
            if d2[k] < best_d2:
                best, best_d2 = inside[j][k], float(d2[k])
        return best

    @staticmethod
    def _segment_radii(vertices: np.ndarray, r: float, taper: bool) -> np.ndarray:
        """(M - 1,) radius per segment; tapered towards both ends (worms) or constant, never < 1."""
        m = len(vertices) - 1
        if not taper:
            return np.full(m, r)
        s = (np.arange(m) + 0.5) / m
        return np.maximum(1.0, r * (0.45 + 0.55 * np.sqrt(np.sin(np.pi * s))))

    def _draw_appearance(self, rng: np.random.Generator) -> None:
        """Draw the per-object appearance parameters (called once per object, in id order)."""

    def _render_objects(self, box: Box, indices: np.ndarray, signal: np.ndarray,
                        instances: np.ndarray) -> None:
        for i in indices:
            part = Box(tuple(self.bbox_lo[i]), tuple(self.bbox_hi[i])).intersect(box)
            q = self.objects[i].q(part)
            mask = q <= 1.0
            if not mask.any():
                continue
            where = part.relative_to(box)
            instances[self.layers[i]][where][mask] = i + 1
            self._paint(i, signal[(slice(None), *where)], q, mask)

    @abc.abstractmethod
    def _paint(self, i: int, signal: np.ndarray, q: np.ndarray, mask: np.ndarray) -> None:
        """Add object ``i`` to ``signal`` (C, *part) where ``mask``; ``q`` in [0, 1] is depth in it."""


class TubeScene(CurveScene):
    """Neuron-like branching tubes with an MCFO-like colour signature per instance.

    Parameters
    ----------
    shape
        (Z, Y, X) voxels.
    n_tubes
        Number of tubes; None: 4 per 64^3 voxels (at least 1).
    radius
        Tube radius range in voxels, low >= 1; branches get 0.7 x the radius (at least 1).
    length
        Length range of the main centre line in voxels.
    branches
        Give each tube 0-2 side branches (same instance).
    cross_prob
        Probability that a tube (from the third on) starts on an earlier tube's centre line.
    channels
        ``"per_instance"`` (one tube per channel, like FlyLight) or ``"packed"`` (greedy colouring).
    noise_sigma
        Standard deviation of the additive Gaussian noise.
    seed
        Seed of all random draws.

    Raw: C = 3; a tube's voxels get ``colour * (1 - 0.6 q)`` (max over tubes), background 0.02, plus noise.
    """

    kind = "tubes"

    def __init__(self, shape: Sequence[int] = (64, 64, 64), *, n_tubes: int | None = None,
                 radius: tuple[float, float] = (2.0, 3.5),
                 length: tuple[float, float] = (40.0, 100.0), branches: bool = True,
                 cross_prob: float = 0.75, channels: ChannelMode = "per_instance",
                 noise_sigma: float = 0.04, seed: int = 0) -> None:
        dims = normalize_shape(shape)
        n = count_for_volume(n_tubes, dims, 64.0 ** 3, 4)
        radius = check_range("radius", radius, 1.0)
        length = check_range("length", length, 0.0)
        self.colours: list[np.ndarray] = []
        params = {"n_tubes": n, "radius": list(radius), "length": list(length),
                  "branches": bool(branches), "cross_prob": cross_prob, "channels": channels,
                  "noise_sigma": noise_sigma}
        super().__init__(dims, seed, n, radius, length, wiggle=0.3,
                         max_branches=2 if branches else 0, cross_prob=cross_prob, taper=False,
                         channels=channels, num_channels=3, noise_sigma=noise_sigma, params=params)

    def _draw_appearance(self, rng: np.random.Generator) -> None:
        on = rng.random(3) < 0.5
        if not on.any():
            on[int(rng.integers(3))] = True
        colour = np.where(on, rng.uniform(0.5, 1.0, 3), rng.uniform(0.0, 0.15, 3))
        self.colours.append(colour.astype(np.float32))

    def _paint(self, i: int, signal: np.ndarray, q: np.ndarray, mask: np.ndarray) -> None:
        profile = (1.0 - 0.6 * q[mask]).astype(np.float32)
        for c in range(signal.shape[0]):
            channel = signal[c]
            channel[mask] = np.maximum(channel[mask], self.colours[i][c] * profile)

    def _compose_raw(self, signal: np.ndarray, noise: np.ndarray) -> np.ndarray:
        noise *= np.float32(self.noise_sigma)
        noise += signal
        noise += np.float32(0.02)
        return noise


class WormScene(CurveScene):
    """BBBC010-like bright-field worms: thick, tapered, smoothly curved bodies that cross (Z = 1).

    Parameters
    ----------
    shape
        (Y, X) or (1, Y, X) pixels.
    n_worms
        Number of worms; None: 8 per 256^2 pixels (at least 1).
    width
        Body width range in pixels (diameter at the middle; ends taper to 45 %), low >= 2.
    length
        Body length range in pixels.
    cross_prob
        Probability that a worm (from the third on) starts on an earlier worm's centre line.
    channels
        ``"per_instance"`` (one worm per channel) or ``"packed"`` (greedy colouring).
    noise_sigma
        Standard deviation of the additive Gaussian noise.
    seed
        Seed of all random draws.

    Raw: C = 1; background 0.62, each worm absorbs ``a * (1 - 0.5 q)`` with a in [0.5, 0.8], absorptions
    add up where worms overlap (darker crossings), plus noise.
    """

    kind = "worms"
    planar = True

    def __init__(self, shape: Sequence[int] = (256, 256), *, n_worms: int | None = None,
                 width: tuple[float, float] = (8.0, 14.0),
                 length: tuple[float, float] = (60.0, 120.0), cross_prob: float = 0.75,
                 channels: ChannelMode = "per_instance", noise_sigma: float = 0.04,
                 seed: int = 0) -> None:
        dims = normalize_shape(shape, planar=True)
        n = count_for_volume(n_worms, dims, 256.0 ** 2, 8)
        width = check_range("width", width, 2.0)
        length = check_range("length", length, 0.0)
        self.absorption: list[float] = []
        params = {"n_worms": n, "width": list(width), "length": list(length),
                  "cross_prob": cross_prob, "channels": channels, "noise_sigma": noise_sigma}
        super().__init__(dims, seed, n, (width[0] / 2, width[1] / 2), length, wiggle=0.15,
                         max_branches=0, cross_prob=cross_prob, taper=True, channels=channels,
                         num_channels=1, noise_sigma=noise_sigma, params=params)

    def _draw_appearance(self, rng: np.random.Generator) -> None:
        self.absorption.append(float(rng.uniform(0.5, 0.8)))

    def _paint(self, i: int, signal: np.ndarray, q: np.ndarray, mask: np.ndarray) -> None:
        channel = signal[0]  # summed in ascending id order: identical for every box
        channel[mask] += (self.absorption[i] * (1.0 - 0.5 * q[mask])).astype(np.float32)

    def _compose_raw(self, signal: np.ndarray, noise: np.ndarray) -> np.ndarray:
        np.minimum(signal, np.float32(0.95), out=signal)  # transmitted = 0.62 * (1 - absorption)
        signal *= np.float32(-0.62)
        signal += np.float32(0.62)
        noise *= np.float32(self.noise_sigma)
        noise += signal
        return noise
