"""Private helpers shared by the assembly ops: input validation and patch-window geometry.

Layout conventions (see docs/assembly.md):

* spatial axes are (Z, Y, X); 2D data is Z = 1 with a patch shape (1, py, px);
* patch channel ``e`` is the C-order linear index of the window position ``d + h`` (h = ps // 2);
* volumes are handled through *padded flat indices*: a volume of shape S is embedded in an array of
  shape S + 2 * pad, so that every window position of every voxel is in bounds and a window offset is
  a single integer added to a flat index.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np

from ppp_dist.errors import InputDataError

DIFFERENT_RULES = ("less_than_threshold", "inverse_threshold", "half_threshold")
CONSENSUS_RULES = ("prob_product", "count")


def check_patch_shape(patch_shape) -> tuple[int, int, int]:
    try:
        ps = tuple(int(s) for s in patch_shape)
    except TypeError as err:
        raise ValueError(f"patch_shape must be a sequence of 3 odd ints (pz, py, px); got {patch_shape!r}") from err
    if len(ps) != 3 or any(s < 1 or s % 2 == 0 for s in ps):
        raise ValueError(f"patch_shape must be 3 odd positive ints (pz, py, px), 2D as (1, py, px); "
                         f"got {patch_shape!r}")
    return ps


@dataclass(frozen=True)
class SparsePatches:
    """Patches (P, Z, Y, X) that are computed only where they are read: ``rows(coords)`` gives the (N, P)
    patches of the voxels ``coords`` (N, 3), in ``dtype``; every step reads only foreground voxels' patches,
    so a source that can compute them per voxel (the oracle) never builds the dense array."""

    shape: tuple[int, ...]  # (P, Z, Y, X)
    dtype: np.dtype
    rows: Callable[[np.ndarray], np.ndarray]

    @property
    def ndim(self) -> int:
        return 4


def check_patch_array(patches: Any, patch_shape) -> Any:
    """Validate the shape and dtype of predicted patches (P, Z, Y, X) without converting them."""
    ps = check_patch_shape(patch_shape)
    n = int(np.prod(ps))
    patches = patches if isinstance(patches, SparsePatches) else np.asarray(patches)
    if patches.ndim != 4 or patches.shape[0] != n:
        raise InputDataError(
            f"patches must have shape ({n}, Z, Y, X) for patch_shape {ps} (one channel per window position); "
            f"got {patches.shape}")
    if patches.dtype != np.uint8 and patches.dtype.kind != "f":
        raise InputDataError(f"patches must be float32/float16 probabilities or uint8 (value/255); "
                             f"got dtype {patches.dtype}")
    return patches


def patch_rows(patches: np.ndarray, coords: np.ndarray) -> np.ndarray:
    """(N, P) C-contiguous float32 patches of the voxels ``coords`` (N, 3), values checked.

    Gathers before converting, so a block converts only its foreground rows (4 P bytes per foreground
    voxel instead of per voxel); element for element the same numbers as converting everything first.
    """
    if isinstance(patches, SparsePatches):
        rows = np.ascontiguousarray(patches.rows(np.asarray(coords, dtype=np.int64)))
        if rows.shape != (len(coords), patches.shape[0]) or rows.dtype != patches.dtype:
            raise ValueError(f"SparsePatches.rows gave {rows.dtype} {rows.shape}, not {patches.dtype} "
                             f"{(len(coords), patches.shape[0])}")
    else:
        rows = np.ascontiguousarray(patches[:, coords[:, 0], coords[:, 1], coords[:, 2]].T)
    if rows.dtype == np.uint8:
        return rows.astype(np.float32) / np.float32(255.0)
    rows = rows.astype(np.float32, copy=False)
    if not np.isfinite(rows).all():
        raise InputDataError("patches contain NaN or inf values; check the prediction step")
    if rows.size and (rows.min() < 0.0 or rows.max() > 1.0):
        raise InputDataError(
            f"patches must be probabilities in [0, 1]; got values in [{rows.min():.3g}, {rows.max():.3g}] "
            "(apply a sigmoid to logits first)")
    return rows


def numinst_from_prob(numinst_prob: np.ndarray, thresholds=(0.9, 0.1), spatial_shape=None,
                      foreground_threshold: float = 0.5) -> np.ndarray:
    """The one foreground definition: number of instances per voxel (0, 1, 2 meaning >= 2), uint8.

    ``numinst_prob`` is (3, Z, Y, X) softmax probabilities of the classes 0, 1, >=2, or a single
    foreground-probability channel (1, Z, Y, X) (numinst = 1 where it is > ``foreground_threshold``, never 2).
    With thresholds (t1, t2): numinst = 1 where P(1) > t1, then 2 where P(2) > t2 (ppp_reference §4.1);
    with thresholds None: argmax.
    """
    prob = np.asarray(numinst_prob)
    if prob.ndim != 4 or prob.shape[0] not in (1, 3):
        raise InputDataError(
            f"numinst_prob must have shape (3, Z, Y, X) (classes 0, 1, >=2) or (1, Z, Y, X) (foreground); "
            f"got {prob.shape}")
    if spatial_shape is not None and tuple(prob.shape[1:]) != tuple(spatial_shape):
        raise InputDataError(
            f"numinst_prob spatial shape {tuple(prob.shape[1:])} differs from the patches' {tuple(spatial_shape)}")
    if prob.dtype == np.uint8:
        prob = prob.astype(np.float32) / np.float32(255.0)
    elif prob.dtype.kind != "f":
        raise InputDataError(f"numinst_prob must be float probabilities or uint8 (value/255); got dtype {prob.dtype}")
    if not np.isfinite(prob).all():
        raise InputDataError("numinst_prob contains NaN or inf values")
    out = np.zeros(prob.shape[1:], dtype=np.uint8)
    if prob.shape[0] == 1:
        out[prob[0] > foreground_threshold] = 1
        return out
    if thresholds is None:
        return np.argmax(prob, axis=0).astype(np.uint8)
    t1, t2 = (float(t) for t in thresholds)
    out[prob[1] > t1] = 1
    out[prob[2] > t2] = 2
    return out


def check_numinst(numinst: np.ndarray, spatial_shape) -> np.ndarray:
    numinst = np.asarray(numinst)
    if numinst.shape != tuple(spatial_shape):
        raise InputDataError(f"numinst must have the spatial shape {tuple(spatial_shape)}; got {numinst.shape}")
    if numinst.dtype.kind not in "ui":
        raise InputDataError(f"numinst must be an integer array (0, 1, >=2); got dtype {numinst.dtype}")
    return np.ascontiguousarray(np.minimum(numinst, 2), dtype=np.uint8)


def check_threshold(name: str, value: float) -> float:
    value = float(value)
    if not 0.0 < value < 1.0:
        raise ValueError(f"{name} must be in (0, 1); got {value}")
    return value


@dataclass(frozen=True)
class Grid:
    """Padded flat indexing of a (Z, Y, X) volume for a patch shape."""

    shape: tuple[int, int, int]
    patch_shape: tuple[int, int, int]
    pad: tuple[int, int, int]

    @property
    def half(self) -> np.ndarray:
        return np.asarray(self.patch_shape, dtype=np.int64) // 2

    @property
    def padded_shape(self) -> tuple[int, int, int]:
        return tuple(int(s + 2 * p) for s, p in zip(self.shape, self.pad))  # type: ignore[return-value]

    @property
    def strides(self) -> np.ndarray:
        ps = self.padded_shape
        return np.array([ps[1] * ps[2], ps[2], 1], dtype=np.int64)

    def flat(self, coords: np.ndarray) -> np.ndarray:
        """(N, 3) unpadded coordinates -> padded flat indices (int64)."""
        return (np.asarray(coords, dtype=np.int64) + np.asarray(self.pad, dtype=np.int64)) @ self.strides

    def window_offsets(self) -> np.ndarray:
        """(P,) padded flat offset of window position e relative to the patch centre."""
        h = self.half
        pos = window_positions(self.patch_shape) - h
        return pos @ self.strides

    def index_volume(self, coords: np.ndarray) -> np.ndarray:
        """Flat padded int32 volume holding i at coords[i] and -1 elsewhere."""
        out = np.full(int(np.prod(self.padded_shape)), -1, dtype=np.int32)
        out[self.flat(coords)] = np.arange(len(coords), dtype=np.int32)
        return out


def window_positions(patch_shape) -> np.ndarray:
    """(P, 3) int64 window positions (0..ps-1 per axis) in C order (= patch channel order)."""
    pz, py, px = patch_shape
    g = np.stack(np.meshgrid(np.arange(pz), np.arange(py), np.arange(px), indexing="ij"), axis=-1)
    return g.reshape(-1, 3).astype(np.int64)


@dataclass(frozen=True)
class PairOffsets:
    """Lexicographically positive voxel-pair offsets d with |d_i| <= ps_i - 1 (= 2h_i) per axis.

    ``lut[flat(d + 2h)]`` is the column of d in a consensus row, or -1 for offsets that are not
    positive; ``base[e]`` is the LUT-flat position of window position e, so the column of the pair
    (window position e_u, window position e_w) is ``lut[base[e_w] - base[e_u] + centre]``.
    """

    offsets: np.ndarray  # (n_pos, 3) int64
    lut: np.ndarray  # int32, over (4hz+1)(4hy+1)(4hx+1)
    lut_shape: tuple[int, int, int]
    base: np.ndarray  # (P,) int64
    centre: int

    @property
    def n(self) -> int:
        return len(self.offsets)


def pair_offsets(patch_shape) -> PairOffsets:
    h = np.asarray(patch_shape, dtype=np.int64) // 2
    lut_shape = (int(4 * h[0] + 1), int(4 * h[1] + 1), int(4 * h[2] + 1))
    g = np.stack(np.meshgrid(*[np.arange(-2 * x, 2 * x + 1) for x in h], indexing="ij"), axis=-1).reshape(-1, 3)
    positive = (g[:, 0] > 0) | ((g[:, 0] == 0) & (g[:, 1] > 0)) | ((g[:, 0] == 0) & (g[:, 1] == 0) & (g[:, 2] > 0))
    lut = np.full(len(g), -1, dtype=np.int32)
    lut[positive] = np.arange(int(positive.sum()), dtype=np.int32)
    lstrides = np.array([lut_shape[1] * lut_shape[2], lut_shape[2], 1], dtype=np.int64)
    base = window_positions(patch_shape) @ lstrides
    centre = int((2 * h) @ lstrides)
    return PairOffsets(g[positive], lut, lut_shape, base, centre)
