"""clDice / FISBe metrics on hand-built tubes with known answers."""

from __future__ import annotations

import numpy as np
import pytest

from ppp_dist.ops.metrics_cldice import aggregate_cldice, cldice_metrics, skeletonize_instances


def _h(stack, c, i, rows, cols, z=0):
    stack[c, z, rows[0]:rows[1], cols[0]:cols[1]] = i


def _crossing(length=(8, 32)):
    """Two GT tubes crossing at rows/cols 18..21, one per channel."""
    gt = np.zeros((2, 1, 40, 40), np.uint16)
    _h(gt, 0, 1, (18, 22), (2, 38))
    _h(gt, 1, 2, length, (18, 22))
    return gt


def test_perfect_and_empty_and_both_empty():
    gt = _crossing()
    r = cldice_metrics(gt, gt)
    assert (r["avF1"], r["C"], r["C_TP"], r["S"], r["FS"], r["FM"], r["tp_rel"]) == (1, 1, 1, 1, 0, 0, 1)
    assert r["cldice_tp"] == pytest.approx(1.0)
    empty = np.zeros_like(gt)
    r = cldice_metrics(gt, empty)
    assert (r["avF1"], r["C"], r["S"], r["per_threshold"][0]["fn"]) == (0, 0, 0, 2)
    r = cldice_metrics(empty, gt)
    assert (r["avF1"], r["C"], r["S"], r["per_threshold"][0]["fp"]) == (0, 0, 0, 2)
    r = cldice_metrics(empty, empty)
    assert (r["avF1"], r["C"], r["S"]) == (1, 1, 1)


def test_f1_uses_2pr_over_p_plus_r_not_the_june_2023_bug():
    gt = np.zeros((1, 1, 40, 40), np.uint16)
    pred = np.zeros_like(gt)
    for k in range(4):
        _h(gt, 0, k + 1, (2 + 5 * k, 5 + 5 * k), (2, 20))
    _h(pred, 0, 1, (2, 5), (2, 20))                      # one TP
    for k in range(3):
        _h(pred, 0, 10 + k, (2 + 5 * k, 5 + 5 * k), (24, 38))  # three FPs on background
    r = cldice_metrics(gt, pred)
    row = r["per_threshold"][4]
    assert (row["tp"], row["fp"], row["fn"]) == (1, 3, 3)
    assert row["f1"] == pytest.approx(0.25)               # 2PR/max(1, P+R) would give 0.125
    assert r["avF1"] == pytest.approx(0.25) and r["C"] == pytest.approx(0.25)
    assert r["S"] == pytest.approx(0.25)


def test_split_counts_one_false_split():
    gt = np.zeros((1, 1, 12, 40), np.uint16)
    _h(gt, 0, 1, (4, 8), (2, 38))
    pred = np.zeros_like(gt)
    _h(pred, 0, 5, (4, 8), (2, 20))
    _h(pred, 0, 6, (4, 8), (20, 38))
    r = cldice_metrics(gt, pred)
    assert (r["FS"], r["FM"]) == (1, 0)
    assert r["C"] == pytest.approx(1.0)                   # union of both halves covers the skeleton
    assert r["per_threshold"][0]["tp"] == 1 and r["per_threshold"][0]["fp"] == 1


def test_merge_counts_one_false_merge():
    gt = np.zeros((1, 1, 20, 40), np.uint16)
    _h(gt, 0, 1, (4, 8), (2, 38))
    _h(gt, 0, 2, (10, 14), (2, 38))
    pred = np.zeros_like(gt)
    pred[0, 0, 4:14, 2:38] = 7
    r = cldice_metrics(gt, pred)
    assert (r["FS"], r["FM"]) == (0, 1)
    assert r["per_threshold"][-1]["tp"] == 0             # clPrecision ~ 1/2 to each: clDice < 0.9


def test_many_to_many_consumption_at_a_crossing():
    gt = _crossing()
    # prediction = GT 1's tube, as a flat label: it covers the crossing, i.e. ~4/24 of GT 2's skeleton
    pred = np.zeros((1, 1, 40, 40), np.uint16)
    _h(pred, 0, 9, (18, 22), (2, 38))
    skel2 = skeletonize_instances(gt)[1]
    share = ((skel2 == 2) & (pred[0] == 9)).sum() / (skel2 == 2).sum()
    assert share > 0.1                                    # plain thresholding would count a false merge
    r = cldice_metrics(gt, pred)
    assert (r["FS"], r["FM"]) == (0, 0)                   # consumption: the crossing belongs to GT 1


def test_coverage_uses_the_union_of_overlapping_predictions():
    gt = np.zeros((1, 1, 12, 40), np.uint16)
    _h(gt, 0, 1, (4, 8), (2, 38))
    pred = np.zeros((2, 1, 12, 40), np.uint16)
    _h(pred, 0, 5, (4, 8), (2, 26))
    _h(pred, 1, 6, (4, 8), (14, 38))                      # overlaps the first on cols 14..25
    r = cldice_metrics(gt, pred)
    assert r["C"] == pytest.approx(1.0)                   # a sum of clRecalls would exceed 1
    assert r["gt_coverage"] == {"ids": [1], "values": [pytest.approx(1.0)]}


def test_3d_tube_and_pooled_aggregation():
    gt = np.zeros((1, 10, 12, 40), np.uint16)
    gt[0, 3:7, 4:8, 2:38] = 1
    skel = skeletonize_instances(gt)
    assert 30 <= (skel == 1).sum() <= 4 * 36           # Lee's thinning empties this tube: medial fallback
    r_good = cldice_metrics(gt, gt * 3)
    r_bad = cldice_metrics(gt, np.zeros_like(gt))
    assert r_good["avF1"] == 1.0 and r_good["S"] == 1.0
    agg = aggregate_cldice([r_good, r_bad])
    assert agg["mean"]["S"] == pytest.approx(0.5)
    assert agg["pooled"]["F1_0.5"] == pytest.approx(2 / 3)  # 2*1 / (2*1 + 0 + 1)
    assert agg["pooled"]["C"] == pytest.approx(0.5)
    assert agg["pooled"]["S"] == pytest.approx(0.5 * 2 / 3 + 0.25)


def test_assembly_style_overlap_channels_score_like_canonical_ones():
    """The assembly writes an instance's second-label voxels into channel 1; clDice must see one mask."""
    from ppp_dist.ops.overlap_table import canonical_stack

    gt = np.zeros((2, 1, 20, 20), np.uint16)
    gt[0, 0, 10, 2:18] = 1  # horizontal
    gt[1, 0, 2:18, 10] = 2  # vertical, crossing at (10, 10)
    spilled = np.zeros_like(gt)
    spilled[0] = gt[0]
    spilled[0, 0, 2:18, 10] = np.where(gt[0, 0, 2:18, 10] == 0, 2, 1)  # 2 in channel 0 except the crossing
    spilled[1, 0, 10, 10] = 2
    canonical = canonical_stack(spilled)
    assert {int(i) for i in np.unique(canonical[0])} | {int(i) for i in np.unique(canonical[1])} == {0, 1, 2}
    assert (np.isin(canonical, [1]).sum(), np.isin(canonical, [2]).sum()) == ((gt == 1).sum(), (gt == 2).sum())
    result = cldice_metrics(gt, spilled, thresholds=(0.5,))
    assert result["avF1"] == pytest.approx(1.0) or result.get("F1_0.5") == pytest.approx(1.0)
