"""ISBI 2012 V_Rand / V_Info, cross-checked against scikit-image's independent implementations."""

from __future__ import annotations

import numpy as np
import pytest
from skimage.metrics import adapted_rand_error, variation_of_information

from ppp_dist.errors import InputDataError
from ppp_dist.ops.metrics_isbi import _contingency, isbi_scores
from ppp_dist.ops.overlap_table import overlap_table


def _pair(seed):
    rng = np.random.default_rng(seed)
    gt = rng.integers(0, 6, (1, 3, 30, 40))
    pred = np.where(rng.random(gt.shape) < 0.8, gt * 3, rng.integers(0, 9, gt.shape))
    return gt, pred


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_rand_and_info_match_skimage(seed):
    gt, pred = _pair(seed)
    table = overlap_table(gt, pred)
    ours = isbi_scores(table, "segment")
    n, joint, pred_marg, gt_marg, _ = _contingency(table, "segment")
    # skimage leaves each voxel's pair with itself out: sum n_ij^2 - n etc.; rebuild its numbers
    are, prec, rec = adapted_rand_error(gt[0], pred[0], ignore_labels=(0,))
    s_p, s_t, s_s = (joint**2).sum() - n, (gt_marg**2).sum() - n, (pred_marg**2).sum() - n
    assert prec == pytest.approx(s_p / s_t, rel=1e-12) and rec == pytest.approx(s_p / s_s, rel=1e-12)
    assert 1 - are == pytest.approx(s_p / (0.5 * s_t + 0.5 * s_s), rel=1e-12)
    # ours uses the paper's probabilities (self pairs included): the same sums without "- n"
    assert ours["v_rand_split"] == pytest.approx((s_p + n) / (s_t + n), rel=1e-12)
    assert ours["v_rand"] == pytest.approx((s_p + n) / (0.5 * (s_t + n) + 0.5 * (s_s + n)), rel=1e-12)
    # skimage returns [H(pred | gt), H(gt | pred)] in bits; I = H(S) - H(S|T) = H(T) - H(T|S)
    h_pred_given_gt, h_gt_given_pred = variation_of_information(gt[0], pred[0], ignore_labels=(0,))
    q_s, q_t = pred_marg[pred_marg > 0] / n, gt_marg / n
    h_s, h_t = -(q_s * np.log2(q_s)).sum(), -(q_t * np.log2(q_t)).sum()
    mi = h_s - h_pred_given_gt
    assert mi == pytest.approx(h_t - h_gt_given_pred, rel=1e-9)
    assert ours["v_info_split"] == pytest.approx(mi / h_s, rel=1e-9)
    assert ours["v_info_merge"] == pytest.approx(mi / h_t, rel=1e-9)
    assert ours["v_info"] == pytest.approx(mi / (0.5 * h_s + 0.5 * h_t), rel=1e-9)


def test_singletons_mode_equals_explicit_singleton_labels():
    gt, pred = _pair(4)
    explicit = pred.copy()
    zeros = np.flatnonzero(explicit == 0)
    explicit.flat[zeros] = 1000 + np.arange(zeros.size)
    a = isbi_scores(overlap_table(gt, pred), "singletons")
    b = isbi_scores(overlap_table(gt, explicit), "segment")
    for key in a:
        assert a[key] == pytest.approx(b[key], rel=1e-12), key


def test_perfect_split_merge_and_flat_only():
    gt = np.zeros((1, 1, 4, 8), int)
    gt[..., :4], gt[..., 4:] = 1, 2
    assert isbi_scores(overlap_table(gt, gt * 5))["v_rand"] == 1.0
    assert isbi_scores(overlap_table(gt, gt * 5))["v_info"] == pytest.approx(1.0)
    merged = isbi_scores(overlap_table(gt, (gt > 0).astype(int)))
    assert merged["v_rand_split"] == 1.0 and merged["v_rand_merge"] == pytest.approx(0.5)
    assert merged["v_info_split"] == 1.0 and merged["v_info_merge"] == 0.0
    with pytest.raises(InputDataError, match="flat"):
        isbi_scores(overlap_table(np.concatenate([gt, gt * 0]), gt))
