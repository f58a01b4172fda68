"""Augmentations of training crops (ppp_reference §1.5), NumPy/SciPy only.

Applied in this order by :class:`ppp_dist.learning.dataset.CropSampler`:

1. smooth elastic deformation + random rotation (probability ``probability_elastic``): a random
   displacement per control point (spacing ``elastic_control_point_spacing``, sigma
   ``elastic_jitter_sigma``), cubic-spline interpolated, plus a rotation by up to ``rotation_max_degrees``
   (in-plane for 2D, about a random axis for 3D); raw is resampled linearly, GT by nearest neighbour;
2. mirror every spatial axis (p = 0.5 each) and transpose axes of equal size (``mirror_transpose``);
3. raw channel permutation (``probability_permute_channels``);
4. hue rotation of 3-channel raw (``probability_hue``, by up to ``hue_max_change`` of the hue circle;
   RGB in [0, 1] -> HSV -> RGB; other channel counts are left alone);
5. intensity ``mean + (raw - mean) * scale + shift`` per crop (``intensity_scale``, ``intensity_shift``);
6. overlay of a second crop (``probability_overlay``): raws added and clipped, GT channels concatenated.
"""

from __future__ import annotations

import math

import numpy as np
from scipy import ndimage

from ppp_dist.config.sections import AugmentationConfig
from ppp_dist.geometry import Box


def _rotation_matrix(rng: np.random.Generator, max_degrees: float, planar: bool) -> np.ndarray:
    angle = math.radians(rng.uniform(-max_degrees, max_degrees))
    c, s = math.cos(angle), math.sin(angle)
    if planar:
        return np.array([[1, 0, 0], [0, c, -s], [0, s, c]], dtype=np.float64)
    axis = rng.normal(size=3)
    axis /= np.linalg.norm(axis) + 1e-12
    k = np.array([[0, -axis[2], axis[1]], [axis[2], 0, -axis[0]], [-axis[1], axis[0], 0]])
    return np.eye(3) + s * k + (1 - c) * (k @ k)


def random_transform(rng: np.random.Generator, shape: tuple[int, ...], aug: AugmentationConfig,
                     planar: bool) -> np.ndarray:
    """(3, *shape) float32 source coordinates (relative to the same box) of a smooth random deformation."""
    grid = np.stack(np.meshgrid(*(np.arange(s, dtype=np.float32) for s in shape), indexing="ij"))
    centre = (np.asarray(shape, dtype=np.float64) - 1) / 2
    rot = _rotation_matrix(rng, aug.rotation_max_degrees, planar)
    rel = grid.reshape(3, -1) - centre[:, None]
    coords = (rot @ rel + centre[:, None]).reshape((3,) + tuple(shape)).astype(np.float32)
    if aug.elastic_jitter_sigma > 0:
        spacing = aug.elastic_control_point_spacing
        axes = (1, 2) if planar else (0, 1, 2)
        for a in axes:
            ctrl = tuple(max(2, -(-s // spacing) + 1) if i in axes else 1 for i, s in enumerate(shape))
            disp = rng.normal(0.0, aug.elastic_jitter_sigma, size=ctrl)
            zoom = [s / c for s, c in zip(shape, ctrl)]
            coords[a] += ndimage.zoom(disp, zoom, order=3, mode="nearest").astype(np.float32)
    return coords


def deformed_crop(read_raw, read_gt, raw_box: Box, gt_box: Box, rng: np.random.Generator,
                  aug: AugmentationConfig, planar: bool) -> tuple[np.ndarray, np.ndarray]:
    """Raw (C, *raw_box.shape) and GT (K, *gt_box.shape) crops resampled through one random deformation.

    ``read_raw(box)`` / ``read_gt(box)`` return zero-padded arrays for any box (``TrainingSample``).
    """
    union = Box(tuple(min(a, b) for a, b in zip(raw_box.begin, gt_box.begin)),
                tuple(max(a, b) for a, b in zip(raw_box.end, gt_box.end)))
    coords = random_transform(rng, union.shape, aug, planar)
    lo = np.floor(coords.reshape(3, -1).min(axis=1)).astype(int) - 1
    hi = np.floor(coords.reshape(3, -1).max(axis=1)).astype(int) + 2
    if planar:
        lo[0], hi[0] = 0, union.shape[0]
    source = Box(tuple(int(u + low) for u, low in zip(union.begin, lo)),
                 tuple(int(u + h) for u, h in zip(union.begin, hi)))
    shift = np.asarray(lo, dtype=np.float32)[:, None, None, None]
    raw_src, gt_src = read_raw(source), read_gt(source)
    raw_c = coords[(slice(None), *raw_box.relative_to(union))] - shift
    gt_c = coords[(slice(None), *gt_box.relative_to(union))] - shift
    raw = np.stack([ndimage.map_coordinates(ch, raw_c, order=1, mode="constant", cval=0.0) for ch in raw_src])
    gt = np.stack([ndimage.map_coordinates(ch, gt_c, order=0, mode="constant", cval=0) for ch in gt_src])
    return raw.astype(np.float32), gt.astype(np.int64)


def mirror_transpose(raw: np.ndarray, gt: np.ndarray, rng: np.random.Generator, planar: bool
                     ) -> tuple[np.ndarray, np.ndarray]:
    """Random flips of every spatial axis and a random permutation of axes whose sizes agree."""
    axes = [1, 2] if planar else [0, 1, 2]
    for a in axes:
        if rng.random() < 0.5:
            raw, gt = np.flip(raw, a + 1), np.flip(gt, a + 1)
    perm = [0, 1, 2]
    groups: dict[tuple[int, int], list[int]] = {}
    for a in axes:
        groups.setdefault((raw.shape[a + 1], gt.shape[a + 1]), []).append(a)
    for members in groups.values():
        shuffled = list(rng.permutation(members))
        for a, b in zip(members, shuffled):
            perm[a] = int(b)
    if perm != [0, 1, 2]:
        order = [0] + [p + 1 for p in perm]
        raw, gt = raw.transpose(order), gt.transpose(order)
    return np.ascontiguousarray(raw), np.ascontiguousarray(gt)


def permute_channels(raw: np.ndarray, rng: np.random.Generator, probability: float) -> np.ndarray:
    if raw.shape[0] > 1 and rng.random() < probability:
        return raw[rng.permutation(raw.shape[0])]
    return raw


def change_hue(raw: np.ndarray, rng: np.random.Generator, probability: float, max_change: float) -> np.ndarray:
    """Rotate the hue of (3, ...) RGB raw in [0, 1] by a random fraction in [-max_change, max_change]."""
    if raw.shape[0] != 3 or rng.random() >= probability:
        return raw
    from matplotlib.colors import hsv_to_rgb, rgb_to_hsv

    hsv = rgb_to_hsv(np.clip(np.moveaxis(raw, 0, -1), 0.0, 1.0))
    hsv[..., 0] = (hsv[..., 0] + rng.uniform(-max_change, max_change)) % 1.0
    return np.ascontiguousarray(np.moveaxis(hsv_to_rgb(hsv), -1, 0), dtype=np.float32)


def scale_shift_intensity(raw: np.ndarray, rng: np.random.Generator, scale: tuple[float, float],
                          shift: tuple[float, float]) -> np.ndarray:
    mean = raw.mean()
    return ((raw - mean) * rng.uniform(*scale) + mean + rng.uniform(*shift)).astype(np.float32)


def overlay(raw: np.ndarray, gt: np.ndarray, raw2: np.ndarray, gt2: np.ndarray, value_range: tuple[float, float]
            ) -> tuple[np.ndarray, np.ndarray]:
    """Add a second crop's raw (clipped to ``value_range``) and append its GT channels."""
    return np.clip(raw + raw2, *value_range).astype(np.float32), np.concatenate([gt, gt2])
