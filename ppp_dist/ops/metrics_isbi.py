"""ISBI 2012 foreground-restricted Rand and information-theoretic F-scores from an overlap table.

Definitions (Arganda-Carreras et al. 2015, "Crowdsourcing the creation of image segmentation algorithms
for connectomics", Front. Neuroanat. 9:142), restricted to the voxels where the GT is foreground (GT id
!= 0; GT 0 is the membrane/boundary and is ignored):

* p_ij = n_ij / n: the joint distribution of predicted segment i and GT segment j over those n voxels;
  s_i = sum_j p_ij (prediction marginal), t_j = sum_i p_ij (GT marginal).
* V_Rand_split = sum p_ij^2 / sum t_j^2, V_Rand_merge = sum p_ij^2 / sum s_i^2,
  V_Rand = sum p_ij^2 / (0.5 sum s_i^2 + 0.5 sum t_j^2)  (alpha = 0.5; pairs include a voxel with itself,
  as in the paper; skimage's ``adapted_rand_error`` leaves those n self-pairs out).
* I(S; T) = sum p_ij log(p_ij / (s_i t_j)), H(S) = -sum s_i log s_i, H(T) = -sum t_j log t_j;
  V_Info_split = I / H(S), V_Info_merge = I / H(T), V_Info = I / (0.5 H(S) + 0.5 H(T)).
  A ratio 0/0 (one segment on each side) is 1.

The predicted label 0 (boundary) is, by ``pred_background``: ``"segment"`` one segment like any other
(skimage's convention), or ``"singletons"`` every such voxel its own segment (the SNEMI3D/ISBI adapted
Rand convention). Not reproduced: the challenge's boundary thinning of the proposal before scoring.
Both label volumes must be flat (one channel).
"""

from __future__ import annotations

from typing import Literal

import numpy as np

from ppp_dist.errors import InputDataError
from ppp_dist.ops.overlap_table import OverlapTable

__all__ = ["PredBackground", "isbi_scores"]

PredBackground = Literal["segment", "singletons"]


def isbi_scores(table: OverlapTable, pred_background: PredBackground = "segment") -> dict[str, float]:
    """V_Rand, V_Info and their split/merge parts of one image (see the module docstring).

    Returns a dict with ``v_rand``, ``v_rand_split``, ``v_rand_merge``, ``v_info``, ``v_info_split``,
    ``v_info_merge`` (all in [0, 1], higher is better) and ``n_foreground`` (GT-foreground voxels).
    """
    if table.gt_channels != 1 or table.pred_channels != 1:
        raise InputDataError(
            "ISBI scores need flat labellings (one channel each); got "
            f"{table.gt_channels} GT and {table.pred_channels} prediction channels"
        )
    n, joint, pred_marg, gt_marg, singles = _contingency(table, pred_background)
    out: dict[str, float] = {"n_foreground": float(n)}
    if n == 0:
        return {**out, "v_rand": 1.0, "v_rand_split": 1.0, "v_rand_merge": 1.0,
                "v_info": 1.0, "v_info_split": 1.0, "v_info_merge": 1.0}
    sum_p2 = (float(np.sum(joint.astype(np.float64) ** 2)) + singles) / n**2
    sum_s2 = (float(np.sum(pred_marg.astype(np.float64) ** 2)) + singles) / n**2
    sum_t2 = float(np.sum(gt_marg.astype(np.float64) ** 2)) / n**2
    out["v_rand_split"] = sum_p2 / sum_t2
    out["v_rand_merge"] = sum_p2 / sum_s2
    out["v_rand"] = sum_p2 / (0.5 * sum_s2 + 0.5 * sum_t2)

    h_s = _entropy(pred_marg, n) + _singleton_entropy(singles, n)
    h_t = _entropy(gt_marg, n)
    h_st = _entropy(joint, n) + _singleton_entropy(singles, n)
    mi = max(0.0, h_s + h_t - h_st)
    out["v_info_split"] = _ratio(mi, h_s)
    out["v_info_merge"] = _ratio(mi, h_t)
    out["v_info"] = _ratio(mi, 0.5 * h_s + 0.5 * h_t)
    return out


def _contingency(table: OverlapTable, pred_background: PredBackground
                 ) -> tuple[int, np.ndarray, np.ndarray, np.ndarray, int]:
    """Counts over GT-foreground voxels: n, n_ij, prediction marginal, GT marginal, singleton voxels."""
    if pred_background not in ("segment", "singletons"):
        raise ValueError(f"pred_background must be 'segment' or 'singletons', got {pred_background!r}")
    fg = table.pair_gt != 0
    g, p, c = table.pair_gt[fg], table.pair_pred[fg], table.pair_count[fg]
    n = int(c.sum())
    singles = 0
    if pred_background == "singletons":
        zero = p == 0
        singles = int(c[zero].sum())
        g, p, c = g[~zero], p[~zero], c[~zero]
    gt_marg = _marginal(table.pair_gt[fg], table.pair_count[fg])
    pred_marg = _marginal(p, c)
    return n, c, pred_marg, gt_marg, singles


def _marginal(ids: np.ndarray, counts: np.ndarray) -> np.ndarray:
    if ids.size == 0:
        return np.zeros(0, np.int64)
    _, inv = np.unique(ids, return_inverse=True)
    return np.bincount(inv, weights=counts).astype(np.int64)


def _entropy(counts: np.ndarray, n: int) -> float:
    q = counts[counts > 0].astype(np.float64) / n
    return float(-np.sum(q * np.log(q)))


def _singleton_entropy(singles: int, n: int) -> float:
    return singles * np.log(n) / n if singles else 0.0


def _ratio(num: float, den: float) -> float:
    if den <= 1e-15:
        return 1.0
    return min(1.0, num / den)
