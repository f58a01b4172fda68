"""Training losses (ppp_reference §1.3).

* ppp: ``patch_weight * BCE-with-logits(patch logits, patch targets) + numinst_weight * CE(numinst logits,
  numinst target clamped to max_num_inst)`` (or BCE on one foreground logit). Both are means over output
  voxels (and patch channels), background and overlap voxels included, as in the torch HEAD. With
  ``background_weight != 1`` every voxel with numinst target 0 gets that weight and the means are weighted
  means (the ``mask_bg_weight`` idea for partly labelled data).
* ppp+dec: the code is ``sigmoid(code logits)``; per batch item up to ``num_code_samples`` voxels with GT
  numinst == 1 are drawn uniformly with replacement, decoded, and scored by BCE-with-logits against their GT
  patches; the decoder is trained jointly. The numinst loss is as above.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F

from ppp_dist.learning.targets import crop_spatial, numinst_target, patch_targets, patch_targets_at


@dataclass(frozen=True)
class LossSettings:
    """What the loss needs from the config (kept small so workers and tests can build it directly)."""

    patch_shape: tuple[int, int, int]
    max_num_inst: int = 2
    head: str = "patches"  # patches | codes
    numinst_head: str = "classes"  # classes | foreground
    patch_weight: float = 1.0
    numinst_weight: float = 1.0
    background_weight: float = 1.0
    num_code_samples: int = 1024


def _weighted_mean(values: torch.Tensor, weights: torch.Tensor | None) -> torch.Tensor:
    if weights is None:
        return values.mean()
    weights = weights.expand_as(values)
    return (values * weights).sum() / weights.sum().clamp_min(1e-8)


def ppp_loss(patch_logits: torch.Tensor, numinst_logits: torch.Tensor, gt: torch.Tensor, settings: LossSettings,
             decoder: torch.nn.Module | None = None) -> dict[str, torch.Tensor]:
    """Loss terms of one batch.

    Parameters
    ----------
    patch_logits : (B, P or K, Z, Y, X) network output (patch logits, or code logits for head = codes).
    numinst_logits : (B, max_num_inst + 1 or 1, Z, Y, X).
    gt : (B, K', Z + 2h, Y + 2h, X + 2h) integer GT channel stack with h = patch_shape // 2 of context
        around the output on every side.
    decoder : the code decoder (head = codes).

    Returns
    -------
    dict with ``loss`` (to backpropagate), ``patch`` and ``numinst`` (float32 scalars).
    """
    out_shape = tuple(patch_logits.shape[2:])
    h = tuple(p // 2 for p in settings.patch_shape)
    expected = tuple(o + 2 * hh for o, hh in zip(out_shape, h))
    if tuple(gt.shape[2:]) != expected:
        raise ValueError(f"gt must have spatial shape output + 2 * (patch_shape // 2) = {expected}, "
                         f"got {tuple(gt.shape[2:])}")
    numinst = numinst_target(crop_spatial(gt, out_shape), settings.max_num_inst)  # (B, Z, Y, X)
    weights = None
    if settings.background_weight != 1.0:
        weights = torch.where(numinst == 0, settings.background_weight, 1.0).to(torch.float32)
    # numinst
    numinst_logits = numinst_logits.float()
    if settings.numinst_head == "classes":
        ni = F.cross_entropy(numinst_logits, numinst, reduction="none")
    else:
        ni = F.binary_cross_entropy_with_logits(numinst_logits[:, 0], (numinst > 0).float(), reduction="none")
    numinst_loss = _weighted_mean(ni, weights)
    # patches
    if settings.head == "patches":
        target = patch_targets(gt, settings.patch_shape, crop=True)
        bce = F.binary_cross_entropy_with_logits(patch_logits.float(), target, reduction="none")
        patch_loss = _weighted_mean(bce, None if weights is None else weights[:, None])
    else:
        patch_loss = _code_loss(patch_logits, gt, numinst, h, settings, decoder)
    loss = settings.patch_weight * patch_loss + settings.numinst_weight * numinst_loss
    return {"loss": loss, "patch": patch_loss.detach(), "numinst": numinst_loss.detach()}


def sample_single_instance_points(numinst: torch.Tensor, n: int) -> torch.Tensor:
    """(m, 4) long (b, z, y, x): up to ``n`` draws with replacement per batch item among numinst == 1."""
    points = []
    for b in range(numinst.shape[0]):
        idx = torch.nonzero(numinst[b] == 1)
        if len(idx) == 0:
            continue
        pick = idx[torch.randint(len(idx), (n,), device=idx.device)]
        points.append(torch.cat([torch.full((n, 1), b, dtype=torch.long, device=idx.device), pick], dim=1))
    if not points:
        return torch.zeros((0, 4), dtype=torch.long, device=numinst.device)
    return torch.cat(points)


def _code_loss(code_logits: torch.Tensor, gt: torch.Tensor, numinst: torch.Tensor, h: tuple[int, ...],
               settings: LossSettings, decoder: torch.nn.Module | None) -> torch.Tensor:
    if decoder is None:
        raise ValueError("head = 'codes' needs the decoder")
    points = sample_single_instance_points(numinst, settings.num_code_samples)
    if len(points) == 0:
        return code_logits.sum() * 0.0  # keeps the graph (and DDP/AMP) happy
    code = torch.sigmoid(code_logits[points[:, 0], :, points[:, 1], points[:, 2], points[:, 3]].float())
    logits = decoder(code)
    shifted = points + torch.tensor((0,) + h, device=points.device)
    target = patch_targets_at(gt, shifted, settings.patch_shape)
    return F.binary_cross_entropy_with_logits(logits.float(), target)
