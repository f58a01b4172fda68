"""Patch and numinst targets in torch, computed on the fly from GT channel stacks (ppp_reference §1.2).

Definition (identical to :func:`ppp_dist.ops.patches.patch_targets`, which is the reference and is tested
equal): channel e of the patch at voxel v (e = C-order index of the window position, offset d = pos - h,
h = patch_shape // 2) is 1 iff some GT channel c has ``seg[c, v] == seg[c, v + d] != 0``; offsets leaving
the array read background. Flat label images are stacks with K = 1 (label *values* are compared, never
multiplied: the HEAD bug of ``seg_to_affgraph_3d_torch`` is not reproduced).
"""

from __future__ import annotations

import itertools
from types import EllipsisType

import torch


def _offsets(patch_shape: tuple[int, int, int]) -> list[tuple[int, int, int]]:
    h = [p // 2 for p in patch_shape]
    return [tuple(int(i) - hh for i, hh in zip(pos, h))  # type: ignore[misc]
            for pos in itertools.product(*(range(p) for p in patch_shape))]


def patch_targets(gt: torch.Tensor, patch_shape: tuple[int, int, int], *, crop: bool = False) -> torch.Tensor:
    """(B, P, Z, Y, X) float patch targets of a batch of GT channel stacks.

    Parameters
    ----------
    gt : (B, K, Z, Y, X) integer tensor, 0 = background (zero-padded channels are fine).
    patch_shape : (pz, py, px) odd.
    crop : also crop h = patch_shape // 2 on every side (GT given with patch context around the output).

    Returns
    -------
    (B, P, Z, Y, X) float32 in {0, 1} (cropped by h per side when ``crop``).
    """
    if gt.ndim != 5:
        raise ValueError(f"gt must be (B, K, Z, Y, X), got shape {tuple(gt.shape)}")
    h = [p // 2 for p in patch_shape]
    b, _, z, y, x = gt.shape
    padded = torch.nn.functional.pad(gt, (h[2], h[2], h[1], h[1], h[0], h[0]))
    if crop:
        out_shape = (z - 2 * h[0], y - 2 * h[1], x - 2 * h[2])
        begin = (2 * h[0], 2 * h[1], 2 * h[2])
    else:
        out_shape, begin = (z, y, x), (h[0], h[1], h[2])
    if min(out_shape) <= 0:
        raise ValueError(f"gt of spatial shape {(z, y, x)} is smaller than the patch context {patch_shape}")
    centre = padded[:, :, begin[0]:begin[0] + out_shape[0], begin[1]:begin[1] + out_shape[1],
                    begin[2]:begin[2] + out_shape[2]]
    nonzero = centre != 0
    out = torch.empty((b, len(_offsets(patch_shape))) + out_shape, dtype=torch.float32, device=gt.device)
    for e, (dz, dy, dx) in enumerate(_offsets(patch_shape)):
        zz, yy, xx = begin[0] + dz, begin[1] + dy, begin[2] + dx
        shifted = padded[:, :, zz:zz + out_shape[0], yy:yy + out_shape[1], xx:xx + out_shape[2]]
        out[:, e] = ((shifted == centre) & nonzero).any(dim=1)
    return out


def patch_targets_at(gt: torch.Tensor, points: torch.Tensor, patch_shape: tuple[int, int, int]) -> torch.Tensor:
    """Patch targets only at ``points``: (n, P) float, equal to ``patch_targets(gt)[b, :, z, y, x]``.

    Parameters
    ----------
    gt : (B, K, Z, Y, X) integer tensor.
    points : (n, 4) long tensor of (b, z, y, x) voxel indices into ``gt``.
    """
    h = [p // 2 for p in patch_shape]
    padded = torch.nn.functional.pad(gt, (h[2], h[2], h[1], h[1], h[0], h[0]))
    offs = torch.tensor(_offsets(patch_shape), dtype=torch.long, device=gt.device)  # (P, 3)
    bi = points[:, 0:1]
    zz = points[:, 1:2] + h[0] + offs[None, :, 0]
    yy = points[:, 2:3] + h[1] + offs[None, :, 1]
    xx = points[:, 3:4] + h[2] + offs[None, :, 2]
    window = padded.permute(0, 2, 3, 4, 1)[bi, zz, yy, xx]  # (n, P, K)
    centre = padded.permute(0, 2, 3, 4, 1)[points[:, 0], points[:, 1] + h[0], points[:, 2] + h[1],
                                           points[:, 3] + h[2]]  # (n, K)
    same = (window == centre[:, None, :]) & (centre[:, None, :] != 0)
    return same.any(dim=-1).to(torch.float32)


def numinst_target(gt: torch.Tensor, max_num_inst: int = 2) -> torch.Tensor:
    """(B, Z, Y, X) long: number of non-zero GT channels per voxel, clamped to ``max_num_inst``."""
    return (gt != 0).sum(dim=1).clamp(max=int(max_num_inst)).long()


def crop_spatial(t: torch.Tensor, shape: tuple[int, ...]) -> torch.Tensor:
    """Centre crop the trailing spatial axes of ``t`` to ``shape``."""
    have = t.shape[-len(shape):]
    sl = tuple(slice((a - s) // 2, (a - s) // 2 + s) for a, s in zip(have, shape))
    index: tuple[EllipsisType | slice, ...] = (..., *sl)
    return t[index]
