"""Nucleus scenes: randomly oriented ellipses / ellipsoids that touch but never overlap (flat labels).

Each nucleus i has a centre ``c_i`` and a symmetric positive definite matrix ``A_i`` (rotation and semi-axes);
``q_i(p) = (p - c_i)^T A_i (p - c_i)`` is 1 on its surface. A voxel belongs to the nucleus with the smallest
``q_i(p) <= 1``, ties to the lower id: overlapping ellipsoids are split along a (weighted) Voronoi boundary,
so nuclei that would overlap touch instead. With probability ``touching`` a new nucleus is placed right
next to an existing one (centre distance 0.75-0.95 x the sum of the mean semi-axes), which makes touching
pairs common. A placement is accepted only if the new nucleus owns the voxel nearest its centre and takes no
earlier nucleus's centre voxel (checked with the same arithmetic as the rasteriser), so a scene of N nuclei
renders exactly N ids. Ids are 1..N in placement order; K = 1.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence

import numpy as np

from ppp_dist.data.synthetic_scene import Scene, check_range, count_for_volume, normalize_shape, random_unit, voxel_grid
from ppp_dist.geometry import Box

logger = logging.getLogger(__name__)


def _quadric(a: np.ndarray, c: np.ndarray, z: np.ndarray, y: np.ndarray, x: np.ndarray) -> np.ndarray:
    """``(p - c)^T A (p - c)`` element-wise (no matmul: identical bits for any box), float64."""
    dz, dy, dx = z - c[0], y - c[1], x - c[2]
    return (a[0, 0] * dz * dz + a[1, 1] * dy * dy + a[2, 2] * dx * dx
            + (2.0 * a[0, 1]) * dz * dy + (2.0 * a[0, 2]) * dz * dx + (2.0 * a[1, 2]) * dy * dx)


def _point_q(a: np.ndarray, c: np.ndarray, voxel: np.ndarray) -> float:
    """:func:`_quadric` at one integer voxel, computed exactly as the rasteriser does."""
    z, y, x = (np.full((1, 1, 1), float(v)) for v in voxel)
    return float(_quadric(a, c, z, y, x)[0, 0, 0])


def _rotation(rng: np.random.Generator, planar: bool) -> np.ndarray:
    """Uniformly random rotation (3, 3); about the Z axis only if ``planar``."""
    if planar:
        angle = rng.uniform(0.0, np.pi)
        cos, sin = np.cos(angle), np.sin(angle)
        return np.array([[1.0, 0.0, 0.0], [0.0, cos, -sin], [0.0, sin, cos]])
    q, r = np.linalg.qr(rng.normal(size=(3, 3)))
    return q * np.sign(np.diag(r))


class NucleusScene(Scene):
    """Touching, non-overlapping nuclei (ellipses for Z = 1, ellipsoids otherwise).

    Parameters
    ----------
    shape
        (Z, Y, X) voxels; (Y, X) or Z = 1 gives 2D ellipses.
    n
        Number of nuclei; None: 40 per 256^2 pixels in 2D, 20 per 64^3 voxels in 3D (at least 1).
    radius
        Range of the mean semi-axis in voxels, low >= 1; the semi-axes are the mean times factors in
        [0.75, 1.25] (at least 1 voxel).
    touching
        Probability of placing a nucleus next to an existing one rather than uniformly.
    noise_sigma
        Standard deviation of the additive Gaussian noise.
    seed
        Seed of all random draws.

    Raises
    ------
    ValueError
        If ``n`` nuclei cannot be placed (the volume is too small for them); lower ``n`` or ``radius``.

    Raw: C = 1; a nucleus's voxels get ``b * (1 - 0.4 q)`` with brightness b in [0.45, 0.95], background
    0.05, plus noise.
    """

    def __init__(self, shape: Sequence[int] = (64, 64, 64), *, n: int | None = None,
                 radius: tuple[float, float] = (5.0, 10.0), touching: float = 0.5,
                 noise_sigma: float = 0.05, seed: int = 0) -> None:
        dims = normalize_shape(shape)
        self.planar = dims[0] == 1
        self.kind = "nuclei2d" if self.planar else "nuclei3d"
        per, ref = (256.0 ** 2, 40) if self.planar else (64.0 ** 3, 20)
        count = count_for_volume(n, dims, per, ref)
        radius = check_range("radius", radius, 1.0)
        if not 0.0 <= touching <= 1.0:
            raise ValueError(f"touching must lie in [0, 1], got {touching}")
        params = {"n": count, "radius": list(radius), "touching": touching,
                  "noise_sigma": noise_sigma}
        super().__init__(dims, seed, 1, noise_sigma, params)
        self._place(np.random.default_rng(self.seed), count, radius, touching)
        self._set_objects(self.lo, self.hi, "flat")
        self.brightness_lut = np.concatenate([[0.0], self.brightness]).astype(np.float32)

    def _place(self, rng: np.random.Generator, count: int, radius: tuple[float, float],
               touching: float) -> None:
        shape = np.asarray(self.shape, dtype=np.float64)
        centres: list[np.ndarray] = []
        mats: list[np.ndarray] = []
        means: list[float] = []
        voxels: list[np.ndarray] = []
        brightness: list[float] = []
        lo: list[np.ndarray] = []
        hi: list[np.ndarray] = []
        attempts, max_attempts = 0, 200 * count + 1000
        while len(centres) < count:
            attempts += 1
            if attempts > max_attempts:
                raise ValueError(
                    f"could place only {len(centres)} of {count} nuclei with radius {radius} in shape "
                    f"{self.shape} after {max_attempts} attempts; lower n or radius")
            mean = rng.uniform(*radius)
            axes = np.maximum(1.0, mean * rng.uniform(0.75, 1.25, size=3))
            if self.planar:
                axes[0] = axes[1]  # unused: Z = 1 and the rotation keeps Z fixed
            rot = _rotation(rng, self.planar)
            if centres and rng.random() < touching:
                host = int(rng.integers(len(centres)))
                step = (means[host] + mean) * rng.uniform(0.75, 0.95)
                centre = centres[host] + step * random_unit(rng, self.planar)
                if np.any(centre < 0.0) or np.any(centre > shape - 1.0):
                    continue
            else:
                centre = rng.uniform(0.0, shape - 1.0)
            mat = (rot / axes ** 2) @ rot.T  # R diag(1/a^2) R^T, construction only
            voxel = np.rint(centre)
            extent = np.sqrt(np.einsum("ij,j,ij->i", rot, axes ** 2, rot))  # bbox half widths
            box_lo = np.floor(centre - extent).astype(np.int64) - 1
            box_hi = np.floor(centre + extent).astype(np.int64) + 2
            if not self._accept(centre, mat, voxel, mean, box_lo, box_hi, centres, mats, means,
                                voxels, lo, hi):
                continue
            centres.append(centre)
            mats.append(mat)
            means.append(mean)
            voxels.append(voxel)
            brightness.append(float(rng.uniform(0.45, 0.95)))
            lo.append(box_lo)
            hi.append(box_hi)
        self.centres = np.array(centres).reshape(-1, 3)
        self.mats = np.array(mats).reshape(-1, 3, 3)
        self.brightness = np.array(brightness)
        self.lo = np.array(lo, dtype=np.int64).reshape(-1, 3)
        self.hi = np.array(hi, dtype=np.int64).reshape(-1, 3)
        logger.debug("placed %d nuclei in %d attempts", count, attempts)

    @staticmethod
    def _accept(centre: np.ndarray, mat: np.ndarray, voxel: np.ndarray, mean: float,
                box_lo: np.ndarray, box_hi: np.ndarray, centres: list[np.ndarray],
                mats: list[np.ndarray], means: list[float], voxels: list[np.ndarray],
                lo: list[np.ndarray], hi: list[np.ndarray]) -> bool:
        """Ownership rule of the module docstring for a candidate against the placed nuclei."""
        own = _point_q(mat, centre, voxel)
        if own > 1.0:
            return False
        if not centres:
            return True
        near = np.nonzero(np.all(np.asarray(lo) < box_hi, axis=1)
                          & np.all(np.asarray(hi) > box_lo, axis=1))[0]
        for j in near:
            gap = float(np.sqrt(np.sum((centres[j] - centre) ** 2)))
            if gap < 0.7 * (means[j] + mean):
                return False  # too much overlap to look like touching nuclei
            # the candidate gets the highest id so far: it must win its centre voxel strictly
            other = _point_q(mats[j], centres[j], voxel)
            if other <= 1.0 and other <= own:
                return False
            # ... and must not take nucleus j's centre voxel (ties go to j, the lower id)
            theirs = _point_q(mat, centre, voxels[j])
            if theirs <= 1.0 and theirs < _point_q(mats[j], centres[j], voxels[j]):
                return False
        return True

    def _render_objects(self, box: Box, indices: np.ndarray, signal: np.ndarray,
                        instances: np.ndarray) -> None:
        best = np.full(box.shape, np.inf)
        owner = instances[0]
        for i in indices:  # ascending ids with a strict "<": ties go to the lower id
            part = Box(tuple(self.lo[i]), tuple(self.hi[i])).intersect(box)
            q = _quadric(self.mats[i], self.centres[i], *voxel_grid(part))
            where = part.relative_to(box)
            won = (q <= 1.0) & (q < best[where])
            best[where][won] = q[won]
            owner[where][won] = i + 1
        inside = owner > 0
        signal[0][inside] = (self.brightness_lut[owner[inside]]
                             * (1.0 - 0.4 * best[inside]).astype(np.float32))

    def _compose_raw(self, signal: np.ndarray, noise: np.ndarray) -> np.ndarray:
        noise *= np.float32(self.noise_sigma)
        noise += signal
        noise += np.float32(0.05)
        return noise
