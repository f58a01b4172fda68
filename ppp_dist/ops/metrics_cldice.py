"""clDice metrics of FlyLight/FISBe (``ppp_reference.md`` §6.4; evalinstseg ``docs/METRICS.md``).

Whole-volume only: skeletons need whole instances. Inputs are channel stacks ``(K, Z, Y, X)``; GT and
predictions may overlap. For each image:

* skel(x): ``skimage.morphology.skeletonize`` of each instance mask on its bounding box padded by one
  voxel (2D when Z = 1, Lee's 3D thinning otherwise). Where thinning deletes a whole instance (Lee's
  method does so for straight tubes of even width), its medial voxels (maximal distance transform) are
  used instead; evalinstseg keeps the empty skeleton.
* clPrecision[g, p] = |skel(p) ∩ mask(g)| / |skel(p)|, with g = 0 the voxels in no GT instance;
  clRecall[g, p] = |skel(g) ∩ mask(p)| / |skel(g)|; clDice = 2 P R / (P + R), 0 when P + R = 0.
  An empty skeleton gives 0.
* One-to-one matching at t (``greedy`` default, ``hungarian`` optional) on pairs with clDice > t
  (strict), ties by GT id, then prediction id. TP, FP = nPred - TP, FN = nGT - TP, F1_t = 2PR/(P+R)
  (the correct formula: not the June-2023 2PR/max(1, P+R)); 0/0 ratios as in ``metrics_iou``.
* avF1 = mean F1_t over t = 0.1 ... 0.9.
* C: each prediction goes to the row of its largest clPrecision (ties to background, then to the
  smallest GT id); those on row 0 are ignored. coverage(g) = |skel(g) ∩ union of the masks assigned to
  g| / |skel(g)|. C = mean coverage over all GT instances (1 if there is no GT and no prediction,
  0 if there is no GT but some prediction). C_TP = mean of the coverages > 0.5 (0 if none).
* S = 0.5 avF1 + 0.5 C; tp = TP_0.5 / nGT; clDiceTP = mean clDice of the TP pairs at 0.5 (0 if none).
* FS, FM (today's FISBe definitions): greedy many-to-many matching with consumption on clRecall,
  FS with threshold 0.05 and FM with 0.1 (evalinstseg's defaults). All pairs with clRecall > thr go into a
  priority queue (highest first, ties by GT id then prediction id). Popping (g, p) records the match and
  consumes: g's available skeleton loses mask(p), p's available mask loses mask(g). Then every other
  candidate (g, o) is re-scored as |avail_skel(g) ∩ mask(o)| / |skel(g)| and every (o, p) as
  |skel(o) ∩ avail_mask(p)| / |skel(o)| (evalinstseg uses o's full skeleton here), re-queued if still
  > thr and dropped otherwise. FS = sum_g max(0, #preds matched to g - 1), FM = sum_p max(0, #GTs
  matched to p - 1). Without overlapping instances this equals plain thresholding of clRecall, which is
  what evalinstseg runs in that case.

Not implemented: the "partly labelled" FP rule, ``unique_false_labels``, the June-2023 per-threshold
FS/FM, the dim/overlap subgroup metrics.
"""

from __future__ import annotations

import heapq
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
from scipy import ndimage as ndi
from skimage.morphology import skeletonize

from ppp_dist.ops.metrics_iou import (
    DEFAULT_THRESHOLDS,
    Assignment,
    detection_rates,
    match_scores,
    threshold_key,
    threshold_rows,
)
from ppp_dist.ops.overlap_table import OverlapTable, as_channel_stack, canonical_stack, overlap_table

__all__ = [
    "AVF1_THRESHOLDS",
    "instance_voxels",
    "skeletonize_instances",
    "filter_predictions",
    "centerline_scores",
    "cldice_metrics",
    "aggregate_cldice",
]

AVF1_THRESHOLDS: tuple[float, ...] = DEFAULT_THRESHOLDS


def instance_voxels(stack: np.ndarray) -> dict[int, np.ndarray]:
    """Map each instance id of a ``(K, Z, Y, X)`` stack to the sorted flat spatial indices of its voxels."""
    stack = as_channel_stack(stack)
    out: dict[int, np.ndarray] = {}
    for c in range(stack.shape[0]):
        flat = stack[c].ravel()
        nz = np.flatnonzero(flat)
        if nz.size == 0:
            continue
        vals = flat[nz]
        order = np.argsort(vals, kind="stable")  # stable: indices stay ascending within an id
        vals, nz = vals[order], nz[order]
        starts = np.flatnonzero(np.r_[True, vals[1:] != vals[:-1]])
        for i, part in zip(vals[starts], np.split(nz, starts[1:])):
            out[int(i)] = part
    return out


def skeletonize_instances(stack: np.ndarray, voxels: Mapping[int, np.ndarray] | None = None) -> np.ndarray:
    """Skeleton of every instance, in the instance's channel and with its id; same shape as ``stack``."""
    stack = as_channel_stack(stack)
    spatial = stack.shape[1:]
    voxels = instance_voxels(stack) if voxels is None else voxels
    out = np.zeros_like(stack)
    for c in range(stack.shape[0]):
        ids = np.unique(stack[c])
        for i in ids[ids != 0]:
            idx = voxels[int(i)]
            coords = np.unravel_index(idx, spatial)
            lo = [int(x.min()) for x in coords]
            hi = [int(x.max()) + 1 for x in coords]
            mask = np.zeros([h - l_ for l_, h in zip(lo, hi)], bool)
            mask[tuple(x - l_ for x, l_ in zip(coords, lo))] = True
            skel = _skeleton(mask)
            view = out[c][tuple(slice(l_, h) for l_, h in zip(lo, hi))]
            view[skel > 0] = i
    return out


def _skeleton(mask: np.ndarray) -> np.ndarray:
    """Skeleton of a (Z, Y, X) mask; 2D thinning when Z = 1. Lee's 3D thinning deletes some shapes
    entirely (e.g. straight tubes of even width); those fall back to their medial voxels (the maximum of
    the distance transform), so that no non-empty instance has an empty centreline."""
    if mask.shape[0] == 1:
        skel = skeletonize(np.pad(mask[0], 1))[1:-1, 1:-1][None]
    else:
        skel = skeletonize(np.pad(mask, 1))[1:-1, 1:-1, 1:-1]
    if not skel.any():
        dist = ndi.distance_transform_edt(np.pad(mask, 1))[1:-1, 1:-1, 1:-1]
        skel = dist == dist.max()
    return skel


def filter_predictions(gt: np.ndarray, pred: np.ndarray, *, min_instance_size: int = 0,
                       foreground_only: bool = False) -> np.ndarray:
    """Array form of ``metrics_iou.prepare_table``: zero predictions on GT background (if asked), then
    remove predicted instances with at most ``min_instance_size`` voxels. Returns a new stack."""
    gt, pred = canonical_stack(gt, "ground truth"), canonical_stack(pred, "prediction").copy()
    if foreground_only:
        pred[:, ~(gt != 0).any(axis=0)] = 0
    if min_instance_size > 0:
        for c in range(pred.shape[0]):
            ids, sizes = np.unique(pred[c], return_counts=True)
            small = ids[(ids != 0) & (sizes <= min_instance_size)]
            if small.size:
                pred[c][np.isin(pred[c], small)] = 0
    return pred


def centerline_scores(prec: OverlapTable, rec: OverlapTable
                      ) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Foreground pairs with their (clPrecision, clRecall, clDice), from the tables mask(gt) x skel(pred)
    and skel(gt) x mask(pred). Returns gt ids, pred ids, P, R, clDice, sorted by (gt, pred)."""
    scores: dict[tuple[int, int], list[float]] = {}
    fg = (prec.pair_gt != 0) & (prec.pair_pred != 0)
    for g, p, v in zip(prec.pair_gt[fg], prec.pair_pred[fg],
                       prec.pair_count[fg] / prec.size_of_pred(prec.pair_pred[fg])):
        scores.setdefault((int(g), int(p)), [0.0, 0.0])[0] = float(v)
    fg = (rec.pair_gt != 0) & (rec.pair_pred != 0)
    for g, p, v in zip(rec.pair_gt[fg], rec.pair_pred[fg],
                       rec.pair_count[fg] / rec.size_of_gt(rec.pair_gt[fg])):
        scores.setdefault((int(g), int(p)), [0.0, 0.0])[1] = float(v)
    keys = sorted(scores)
    g = np.array([k[0] for k in keys], np.uint64)
    p = np.array([k[1] for k in keys], np.uint64)
    pr = np.array([scores[k] for k in keys], np.float64).reshape(-1, 2)
    s = pr.sum(axis=1)
    dice = np.divide(2 * pr[:, 0] * pr[:, 1], s, out=np.zeros_like(s), where=s > 0)
    return g, p, pr[:, 0], pr[:, 1], dice


def cldice_metrics(gt: np.ndarray, pred: np.ndarray, thresholds: Sequence[float] = DEFAULT_THRESHOLDS,
                   assignment: Assignment = "greedy", *, fs_threshold: float = 0.05,
                   fm_threshold: float = 0.1) -> dict[str, Any]:
    """All clDice metrics of one image (filters already applied; see the module docstring).

    Parameters
    ----------
    gt, pred : (Y, X), (Z, Y, X) or (K, Z, Y, X) instance ids, same spatial shape.
    """
    gt, pred = canonical_stack(gt, "ground truth"), canonical_stack(pred, "prediction")
    gt_vox, pred_vox = instance_voxels(gt), instance_voxels(pred)
    gt_skel = skeletonize_instances(gt, gt_vox)
    pred_skel = skeletonize_instances(pred, pred_vox)
    prec = overlap_table(gt, pred_skel)
    rec = overlap_table(gt_skel, pred)
    n_gt, n_pred = len(gt_vox), len(pred_vox)
    g, p, cl_p, cl_r, dice = centerline_scores(prec, rec)

    rows = []
    tp_05: list[float] = []
    for t in thresholds:
        m = match_scores(g, p, dice, n_gt, n_pred, float(t), assignment, strict=True)
        row: dict[str, Any] = {"threshold": float(t), "tp": m.tp, "fp": n_pred - m.tp, "fn": n_gt - m.tp}
        row.update(detection_rates(m.tp, n_pred - m.tp, n_gt - m.tp))
        rows.append(row)
        if abs(float(t) - 0.5) < 1e-12:
            tp_05 = [float(x) for x in m.scores]
    coverage = _gt_coverage(gt, pred, gt_skel, prec, gt_vox)
    cov = np.array(list(coverage.values()), np.float64)
    if n_gt:
        c_all = float(cov.mean())
    else:
        c_all = 1.0 if n_pred == 0 else 0.0
    c_tp = float(cov[cov > 0.5].mean()) if (cov > 0.5).any() else 0.0
    overlaps = bool(((gt != 0).sum(axis=0) > 1).any() or ((pred != 0).sum(axis=0) > 1).any())
    gt_skel_vox = instance_voxels(gt_skel)
    fs = _false_splits_merges(g, p, cl_r, fs_threshold, overlaps, gt_skel_vox, gt_vox, pred_vox)[0]
    fm = _false_splits_merges(g, p, cl_r, fm_threshold, overlaps, gt_skel_vox, gt_vox, pred_vox)[1]
    cols = _cldice_columns(rows)
    av_f1 = cols["avF1"]
    return {
        "n_gt": n_gt, "n_pred": n_pred, "per_threshold": rows, **cols,
        "C": c_all, "C_TP": c_tp, "S": None if av_f1 is None else 0.5 * av_f1 + 0.5 * c_all,
        "tp_rel": (len(tp_05) / n_gt) if n_gt else (1.0 if n_pred == 0 else 0.0),
        "cldice_tp": float(np.mean(tp_05)) if tp_05 else 0.0,
        "FS": fs, "FM": fm, "fs_threshold": fs_threshold, "fm_threshold": fm_threshold,
        "gt_coverage": {"ids": list(coverage), "values": [float(v) for v in coverage.values()]},
    }


def aggregate_cldice(results: Sequence[Mapping[str, Any]]) -> dict[str, dict[str, Any]]:
    """``mean``: per-image values averaged over images; ``pooled`` (FlyLight cross-validation style):
    F1_t = 2ΣTP / (2ΣTP + ΣFP + ΣFN), C and C_TP over all GT instances of all images, S = 0.5 avF1 +
    0.5 C, FS and FM summed."""
    if not results:
        return {"mean": {}, "pooled": {}}
    n, mean_rows, pooled_rows = threshold_rows(results)
    mean: dict[str, Any] = {**n, "per_threshold": mean_rows, **_cldice_columns(mean_rows)}
    for key in ("avF1", "C", "C_TP", "S", "tp_rel", "cldice_tp", "FS", "FM"):
        vals = [r[key] for r in results if r[key] is not None]
        mean[key] = float(np.mean(vals)) if vals else None
    cov = np.concatenate([np.asarray(r["gt_coverage"]["values"], np.float64) for r in results])
    pooled: dict[str, Any] = {**n, "per_threshold": pooled_rows, **_cldice_columns(pooled_rows)}
    pooled["C"] = float(cov.mean()) if cov.size else (1.0 if n["n_pred"] == 0 else 0.0)
    pooled["C_TP"] = float(cov[cov > 0.5].mean()) if (cov > 0.5).any() else 0.0
    pooled["S"] = None if pooled["avF1"] is None else 0.5 * pooled["avF1"] + 0.5 * pooled["C"]
    pooled["FS"] = int(sum(r["FS"] for r in results))
    pooled["FM"] = int(sum(r["FM"] for r in results))
    return {"mean": mean, "pooled": pooled}


# --------------------------------------------------------------------------------------------- helpers


def _cldice_columns(rows: Sequence[Mapping[str, Any]]) -> dict[str, Any]:
    by_t = {round(r["threshold"], 9): r for r in rows}
    f1 = [by_t[t]["f1"] for t in AVF1_THRESHOLDS] if all(t in by_t for t in AVF1_THRESHOLDS) else None
    out: dict[str, Any] = {"avF1": float(np.mean(f1)) if f1 is not None else None}
    out.update({threshold_key("F1", r["threshold"]): r["f1"] for r in rows})
    return out


def _gt_coverage(gt: np.ndarray, pred: np.ndarray, gt_skel: np.ndarray, prec: OverlapTable,
                 gt_vox: Mapping[int, np.ndarray]) -> dict[int, float]:
    """coverage(g) for every GT id (ascending), by the union of the predictions assigned to g."""
    # best row per prediction: max clPrecision, ties to the smallest row id (0 = background first)
    assigned: dict[int, int] = {}
    best: dict[int, float] = {}
    skel_size = dict(zip((int(i) for i in prec.pred_ids), (int(s) for s in prec.pred_sizes)))
    for g, p, c in zip(prec.pair_gt, prec.pair_pred, prec.pair_count):  # sorted by g: first max wins
        p = int(p)
        if p == 0:
            continue
        v = int(c) / skel_size[p]
        if v > best.get(p, -1.0):
            best[p], assigned[p] = v, int(g)
    pred_ids = np.array(sorted(assigned), np.uint64)
    target = np.array([assigned[int(i)] for i in pred_ids], np.uint64)
    covered: dict[int, int] = {}
    skel_total: dict[int, int] = {}
    flat_pred = pred.reshape(pred.shape[0], -1)
    for i in range(gt_skel.shape[0]):
        sk = gt_skel[i].ravel()
        idx = np.flatnonzero(sk)
        ids = sk[idx].astype(np.uint64)
        hit = np.zeros(idx.size, bool)
        for j in range(flat_pred.shape[0]):
            pv = flat_pred[j][idx].astype(np.uint64)
            k = np.clip(np.searchsorted(pred_ids, pv), 0, max(0, pred_ids.size - 1))
            if pred_ids.size:
                known = (pred_ids[k] == pv) & (pv != 0)
                hit |= known & (target[k] == ids)
        u, n = np.unique(ids, return_counts=True)
        skel_total.update(zip((int(x) for x in u), (int(x) for x in n)))
        u, n = np.unique(ids[hit], return_counts=True)
        covered.update(zip((int(x) for x in u), (int(x) for x in n)))
    return {g: (covered.get(g, 0) / skel_total[g] if skel_total.get(g) else 0.0) for g in sorted(gt_vox)}


def _false_splits_merges(g: np.ndarray, p: np.ndarray, cl_r: np.ndarray, thr: float, overlaps: bool,
                         gt_skel_vox: Mapping[int, np.ndarray], gt_vox: Mapping[int, np.ndarray],
                         pred_vox: Mapping[int, np.ndarray]) -> tuple[int, int]:
    """(FS, FM) of the many-to-many matching on clRecall > thr (see the module docstring)."""
    cand = cl_r > thr
    pairs = list(zip((int(x) for x in g[cand]), (int(x) for x in p[cand])))
    if overlaps and pairs:
        pairs = _greedy_many_to_many(pairs, [float(x) for x in cl_r[cand]], thr,
                                     gt_skel_vox, gt_vox, pred_vox)
    per_gt: dict[int, int] = {}
    per_pred: dict[int, int] = {}
    for gi, pi in pairs:
        per_gt[gi] = per_gt.get(gi, 0) + 1
        per_pred[pi] = per_pred.get(pi, 0) + 1
    return (sum(max(0, n - 1) for n in per_gt.values()), sum(max(0, n - 1) for n in per_pred.values()))


def _greedy_many_to_many(pairs: list[tuple[int, int]], scores: list[float], thr: float,
                         gt_skel_vox: Mapping[int, np.ndarray], gt_vox: Mapping[int, np.ndarray],
                         pred_vox: Mapping[int, np.ndarray]) -> list[tuple[int, int]]:
    empty = np.zeros(0, np.int64)
    current = dict(zip(pairs, scores))  # live priority of each queued pair (latest push wins)
    heap = [(-s, gi, pi) for (gi, pi), s in current.items()]
    heapq.heapify(heap)
    preds_of: dict[int, list[int]] = {}
    gts_of: dict[int, list[int]] = {}
    for gi, pi in pairs:
        preds_of.setdefault(gi, []).append(pi)
        gts_of.setdefault(pi, []).append(gi)
    skel = {gi: gt_skel_vox.get(gi, empty) for gi in preds_of}
    gt_avail = dict(skel)
    pred_avail = {pi: pred_vox[pi] for pi in gts_of}

    def push(key: tuple[int, int], score: float) -> None:
        if score > thr:
            current[key] = score
            heapq.heappush(heap, (-score, key[0], key[1]))
        else:
            current.pop(key, None)

    matched = []
    while heap:
        neg, gi, pi = heapq.heappop(heap)
        if current.get((gi, pi)) != -neg:
            continue  # stale or removed entry
        del current[(gi, pi)]
        matched.append((gi, pi))
        gt_avail[gi] = gt_avail[gi][~np.isin(gt_avail[gi], pred_vox[pi], assume_unique=True)]
        pred_avail[pi] = pred_avail[pi][~np.isin(pred_avail[pi], gt_vox[gi], assume_unique=True)]
        den = float(skel[gi].size) or 1.0
        for o in preds_of[gi]:
            push((gi, o), np.isin(gt_avail[gi], pred_vox[o], assume_unique=True).sum() / den)
        for o in gts_of[pi]:
            den_o = float(skel[o].size) or 1.0
            push((o, pi), np.isin(skel[o], pred_avail[pi], assume_unique=True).sum() / den_o)
    return matched
