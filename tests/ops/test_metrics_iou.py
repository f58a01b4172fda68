"""IoU instance metrics and the overlap table: hand-built cases with known answers, properties, and a
cross-check against stardist.matching on its real DSB2018 nuclei mask."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp
from scipy import ndimage as ndi

from ppp_dist.errors import InputDataError
from ppp_dist.ops.metrics_iou import (
    DEFAULT_THRESHOLDS,
    aggregate_images,
    detection_rates,
    iou_metrics,
    match_iou,
    prepare_table,
)
from ppp_dist.ops.overlap_table import merge_tables, overlap_table


def _s(gt, pred, t, assignment="hungarian", **filters):
    table = prepare_table(overlap_table(gt, pred), **filters)
    res = iou_metrics(table, (t,), assignment)
    return res["per_threshold"][0]


def _two_boxes():
    gt = np.zeros((10, 20), np.uint16)
    gt[2:8, 2:8] = 1
    gt[2:8, 12:18] = 2
    return gt


# --------------------------------------------------------------------------------- overlap table


def test_table_counts_flat():
    gt = np.array([[1, 1, 0, 2]])
    pred = np.array([[3, 0, 0, 3]])
    t = overlap_table(gt, pred)
    assert list(zip(t.pair_gt.tolist(), t.pair_pred.tolist(), t.pair_count.tolist())) == [
        (0, 0, 1), (1, 0, 1), (1, 3, 1), (2, 3, 1)]
    assert dict(zip(t.gt_ids.tolist(), t.gt_sizes.tolist())) == {0: 1, 1: 2, 2: 1}
    assert dict(zip(t.pred_ids.tolist(), t.pred_sizes.tolist())) == {0: 2, 3: 2}
    assert t.n_voxels == 4


def test_table_channel_stack_counts_every_pair_of_a_voxel():
    # voxel 1 lies in GT 1 and GT 2 (two channels) and in prediction 5
    gt = np.array([[[[1, 1, 0]]], [[[0, 2, 2]]]])
    pred = np.array([[[[5, 5, 0]]]])
    t = overlap_table(gt, pred)
    pairs = dict(zip(zip(t.pair_gt.tolist(), t.pair_pred.tolist()), t.pair_count.tolist()))
    assert pairs == {(1, 5): 2, (2, 5): 1, (2, 0): 1}
    assert dict(zip(t.gt_ids.tolist(), t.gt_sizes.tolist())) == {1: 2, 2: 2}


def test_table_rejects_id_twice_at_one_voxel_and_bad_dtype():
    gt = np.array([[[[1, 0]]], [[[1, 2]]]])
    with pytest.raises(InputDataError, match=r"id 1 appears twice at one voxel \(channels 0 and 1\)"):
        overlap_table(gt, np.zeros((1, 1, 1, 2), int))

    # an instance spilling into channel 1 (the assembly's overlap channel) counts each voxel once
    spill = np.array([[[[1, 1, 2]]], [[[0, 2, 0]]]])
    t = overlap_table(spill, spill)
    assert dict(zip(t.pred_ids.tolist(), t.pred_sizes.tolist())) == {1: 2, 2: 2}
    assert dict(zip(zip(t.pair_gt.tolist(), t.pair_pred.tolist()), t.pair_count.tolist())) == \
        {(1, 1): 2, (1, 2): 1, (2, 1): 1, (2, 2): 2}
    with pytest.raises(InputDataError, match="integer"):
        overlap_table(np.zeros((2, 2), float), np.zeros((2, 2), int))
    with pytest.raises(InputDataError, match="spatial shape"):
        overlap_table(np.zeros((2, 2), int), np.zeros((2, 3), int))


def test_merged_block_tables_equal_whole_table_with_huge_ids():
    rng = np.random.default_rng(3)
    gt = rng.integers(0, 4, (2, 6, 9, 7)).astype(np.uint64)
    gt[1] = np.where(gt[1] > 0, gt[1] + (np.uint64(1) << np.uint64(40)), 0)  # ids beyond 32 bits
    pred = rng.integers(0, 5, (1, 6, 9, 7)).astype(np.uint64)
    whole = overlap_table(gt, pred)
    parts = [overlap_table(gt[:, :, :4], pred[:, :, :4]), overlap_table(gt[:, :, 4:], pred[:, :, 4:])]
    merged = merge_tables([merge_tables(parts[:1]), parts[1]])
    for name in ("gt_ids", "gt_sizes", "pred_ids", "pred_sizes", "pair_gt", "pair_pred", "pair_count"):
        np.testing.assert_array_equal(getattr(whole, name), getattr(merged, name), err_msg=name)
    assert merged.n_voxels == whole.n_voxels


# --------------------------------------------------------------------------------- hand-built cases


def test_perfect_match():
    gt = _two_boxes()
    for t in DEFAULT_THRESHOLDS:
        row = _s(gt, gt * 7, t)
        assert (row["tp"], row["fp"], row["fn"], row["s"], row["f1"]) == (2, 0, 0, 1.0, 1.0)


def test_empty_prediction_empty_gt_and_both_empty():
    gt = _two_boxes()
    empty = np.zeros_like(gt)
    row = _s(gt, empty, 0.5)
    assert (row["tp"], row["fp"], row["fn"], row["s"], row["precision"], row["recall"]) == (0, 0, 2, 0, 0, 0)
    row = _s(empty, gt, 0.5)
    assert (row["tp"], row["fp"], row["fn"], row["s"], row["precision"], row["recall"]) == (0, 2, 0, 0, 0, 0)
    row = _s(empty, empty, 0.5)
    assert (row["tp"], row["fp"], row["fn"], row["s"], row["f1"]) == (0, 0, 0, 1.0, 1.0)


def test_one_split():
    gt = np.zeros((4, 10), int)
    gt[:, :] = 1
    pred = np.zeros_like(gt)
    pred[:, :6] = 1
    pred[:, 6:] = 2                  # IoU 0.6 and 0.4
    assert _s(gt, pred, 0.5)["tp"] == 1 and _s(gt, pred, 0.5)["fp"] == 1
    assert _s(gt, pred, 0.6)["s"] == pytest.approx(1 / 2)
    assert _s(gt, pred, 0.7)["s"] == 0.0


def test_one_merge():
    gt = np.zeros((4, 10), int)
    gt[:, :5] = 1
    gt[:, 5:] = 2
    pred = np.ones_like(gt)          # IoU 0.5 with both
    row = _s(gt, pred, 0.5)
    assert (row["tp"], row["fp"], row["fn"]) == (1, 0, 1)
    assert row["s"] == pytest.approx(0.5)
    assert _s(gt, pred, 0.51)["tp"] == 0


def test_iou_exactly_at_threshold_counts():
    gt = np.zeros((1, 10), int)
    gt[0, :5] = 1
    # prediction = first n voxels: IoU = min(n, 5) / max(n, 5), written as the decimal threshold
    for n, t in [(1, 0.2), (2, 0.4), (3, 0.6), (4, 0.8), (10, 0.5), (5, 1.0)]:
        pred = np.zeros_like(gt)
        pred[0, :n] = 1
        assert _s(gt, pred, t)["tp"] == 1, (n, t)
        assert _s(gt, pred, t, "greedy")["tp"] == 1, (n, t)
        if t < 1.0:
            assert _s(gt, pred, float(np.nextafter(t, 1)))["tp"] == 0, (n, t)


def test_overlapping_channels():
    # two GT instances that overlap (one per channel) and a prediction that copies them
    gt = np.zeros((2, 1, 6, 6), int)
    gt[0, 0, 1:5, 0:4] = 1
    gt[1, 0, 1:5, 2:6] = 2
    pred = np.zeros((2, 1, 6, 6), int)
    pred[0, 0] = np.where(gt[1, 0] > 0, 11, 0)
    pred[1, 0] = np.where(gt[0, 0] > 0, 10, 0)
    for t in DEFAULT_THRESHOLDS:
        assert _s(gt, pred, t)["s"] == 1.0
    # flat prediction of the union: IoU = 16 / 24 with each GT
    flat = (gt.max(axis=0, keepdims=True) > 0).astype(int)
    assert _s(gt, flat, 0.66)["tp"] == 1 and _s(gt, flat, 0.67)["tp"] == 0


def test_greedy_differs_from_hungarian():
    # GT a = x0..9, b = x10..13; pred P = x2..13 (IoU a 8/14, b 4/12), Q = x0..4 (IoU a 0.5), own channel.
    # Greedy takes (a, P) first and strands b; Hungarian matches (a, Q) and (b, P).
    gt = np.zeros((1, 14), int)
    gt[0, :10], gt[0, 10:] = 1, 2
    pred = np.zeros((2, 1, 1, 14), int)
    pred[0, 0, 0, 2:14] = 5
    pred[1, 0, 0, 0:5] = 6
    m_h = match_iou(overlap_table(gt, pred), 0.3, "hungarian")
    m_g = match_iou(overlap_table(gt, pred), 0.3, "greedy")
    assert sorted(zip(m_h.gt_ids.tolist(), m_h.pred_ids.tolist())) == [(1, 6), (2, 5)]
    assert list(zip(m_g.gt_ids.tolist(), m_g.pred_ids.tolist())) == [(1, 5)]
    assert _s(gt, pred, 0.3)["s"] == 1.0 and _s(gt, pred, 0.3, "greedy")["s"] == pytest.approx(1 / 3)


def test_small_object_filter_and_foreground_only():
    gt = _two_boxes()
    pred = gt.copy()
    pred[0, 0] = 9                   # 1-voxel FP on GT background
    pred[9, 19] = 8                  # another one
    assert _s(gt, pred, 0.5)["fp"] == 2
    assert _s(gt, pred, 0.5, min_instance_size=1)["fp"] == 0
    assert _s(gt, pred, 0.5, foreground_only=True)["fp"] == 0
    pred[2:8, 8:10] = 1              # grow instance 1 onto background: IoU 36/48
    assert _s(gt, pred, 0.8)["tp"] == 1
    assert _s(gt, pred, 0.8, foreground_only=True)["tp"] == 2


def test_table_filters_equal_array_filters():
    from ppp_dist.ops.metrics_cldice import filter_predictions

    rng = np.random.default_rng(5)
    gt = rng.integers(0, 3, (2, 3, 8, 8))
    gt[1] = np.where(gt[1] > 0, gt[1] + 10, 0)
    flat = rng.integers(0, 6, (1, 3, 8, 8))
    stack = rng.integers(0, 4, (2, 3, 8, 8))
    stack[1] = np.where(stack[1] > 0, stack[1] + 20, 0)
    for pred in (flat, stack):
        for fg in (False, True):
            for size in (0, 10, 40):
                a = prepare_table(overlap_table(gt, pred), min_instance_size=size, foreground_only=fg)
                arr = filter_predictions(gt, pred, min_instance_size=size, foreground_only=fg)
                b = overlap_table(gt, arr)
                exact = pred.shape[0] == 1 or size == 0     # stacks: (g, 0) pairs not kept by the size filter
                keep_a = slice(None) if exact else (a.pair_pred != 0)
                keep_b = slice(None) if exact else (b.pair_pred != 0)
                for name in ("pair_gt", "pair_pred", "pair_count"):
                    np.testing.assert_array_equal(getattr(a, name)[keep_a], getattr(b, name)[keep_b],
                                                  err_msg=f"{name} {pred.shape} {fg} {size}")
                ids_a = a.pred_ids if exact else a.pred_instances
                ids_b = b.pred_ids if exact else b.pred_instances
                np.testing.assert_array_equal(ids_a, ids_b)
                np.testing.assert_array_equal(a.size_of_pred(ids_a), b.size_of_pred(ids_b))


def test_rates_and_aggregation():
    assert detection_rates(2, 1, 1) == {"precision": 2 / 3, "recall": 2 / 3, "f1": pytest.approx(2 / 3),
                                        "s": 0.5}
    gt = _two_boxes()
    a = iou_metrics(overlap_table(gt, gt))
    b = iou_metrics(overlap_table(gt, np.zeros_like(gt)))
    agg = aggregate_images([a, b])
    assert agg["mean"]["S_0.5"] == 0.5 and agg["mean"]["avS"] == 0.5
    assert agg["pooled"]["S_0.5"] == pytest.approx(2 / 4)
    assert a["avS"] == 1.0 and iou_metrics(overlap_table(gt, gt), (0.5,))["avS"] is None


# --------------------------------------------------------------------------------- properties

_labels = hnp.arrays(np.uint8, (1, 2, 6, 7), elements=st.integers(0, 5))


@settings(max_examples=25, deadline=None)
@given(gt=_labels, pred=_labels, perm_seed=st.integers(0, 1000), t=st.sampled_from(DEFAULT_THRESHOLDS))
def test_relabelling_invariance_and_hungarian_symmetry(gt, pred, perm_seed, t):
    base = _s(gt, pred, t)
    perm = np.random.default_rng(perm_seed).permutation(np.arange(1, 50))[:6]
    relabel = np.concatenate([[0], perm])
    assert _s(relabel[gt], pred.astype(np.int64) * 1000 + (pred > 0) * 17, t)["s"] == base["s"]
    swapped = _s(pred, gt, t)
    assert (swapped["tp"], swapped["fp"], swapped["fn"]) == (base["tp"], base["fn"], base["fp"])
    assert swapped["s"] == base["s"]
    assert _s(gt, pred, t, "greedy")["tp"] <= base["tp"]


# --------------------------------------------------------------------------------- stardist


def _perturb(mask: np.ndarray, seed: int) -> np.ndarray:
    """Seeded copy of a label image with instances removed, eroded, dilated, split and merged."""
    rng = np.random.default_rng(seed)
    pred = mask.astype(np.int32).copy()
    ids = np.unique(mask)[1:]
    next_id = int(ids.max()) + 1
    for i in ids:
        m = pred == i
        if not m.any():
            continue
        r = rng.random()
        if r < 0.1:
            pred[m] = 0
        elif r < 0.25:
            pred[ndi.binary_dilation(m, iterations=2) & (pred == 0)] = i
        elif r < 0.4:
            pred[m & ~ndi.binary_erosion(m, iterations=2)] = 0
        elif r < 0.55:
            ys, xs = np.nonzero(m)
            half = xs < np.median(xs) + rng.integers(-2, 3)
            pred[ys[half], xs[half]] = next_id
            next_id += 1
        elif r < 0.7:
            near = np.unique(pred[ndi.binary_dilation(m, iterations=2) & ~m])
            near = near[(near != 0) & (near != i)]
            if near.size:
                pred[pred == near[0]] = i
    return pred


@pytest.mark.parametrize("seed", [0, 1])
def test_matches_stardist_accuracy_on_dsb2018(seed):
    from stardist.data import test_image_nuclei_2d
    from stardist.matching import matching

    _, mask = test_image_nuclei_2d(return_mask=True)
    pred = _perturb(mask, seed)
    res = iou_metrics(overlap_table(mask, pred))
    for row in res["per_threshold"]:
        ref = matching(mask, pred, thresh=row["threshold"])
        assert abs(row["s"] - ref.accuracy) <= 1e-9
        assert (row["tp"], row["fp"], row["fn"]) == (ref.tp, ref.fp, ref.fn)
        assert abs(row["f1"] - ref.f1) <= 1e-9
