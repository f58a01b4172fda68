"""IoU instance metrics of the ECCV datasets (``ppp_reference.md`` §6.2), derived from an overlap table.

Per image and IoU threshold t:

* IoU(g, p) = |g ∩ p| / (|g| + |p| - |g ∩ p|) for every GT/prediction pair that overlaps (background 0
  excluded). Nothing dense over nGT x nPred is ever built.
* ``hungarian`` (default): the assignment of scipy's ``linear_sum_assignment`` with cost
  ``-[IoU >= t] - IoU / (2 min(nGT, nPred))`` as in the original. Its secondary term sums to at most 1/2,
  so it maximises the number of pairs with IoU >= t; that number only depends on the connected components
  of the graph of such pairs, so the dense problem is solved per component (a component with one pair is
  one match), with all overlapping pairs of the component in its cost matrix for the same tie-breaks.
* ``greedy``: pairs with IoU >= t in descending IoU order (ties by GT id, then prediction id), accepted
  when both are still unmatched.
* TP = matched pairs with IoU >= t (``>=``: IoU = 0.5 counts at t = 0.5), FP = nPred - TP,
  FN = nGT - TP, S_t = TP / (TP + FP + FN), precision = TP / (TP + FP), recall = TP / (TP + FN),
  F1 = 2 P R / (P + R) (0 when P + R = 0).
* A ratio whose denominator is 0 (nothing predicted, or nothing to find) is 1 when the image has no error
  at all (FP = FN = 0: both empty) and 0 otherwise. stardist and evalinstseg give 0 in the both-empty case.
* avS = mean of S_t over t = 0.5, 0.6, 0.7, 0.8, 0.9 (the README's metric, not the code's avAP).

Thresholds are compared as given: pass exact decimals such as 0.3, not ``np.arange`` values like
0.30000000000000004, or a pair with IoU exactly 0.3 is missed.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Literal

import numpy as np
from scipy.optimize import linear_sum_assignment
from scipy.sparse import coo_matrix
from scipy.sparse.csgraph import connected_components

from ppp_dist.ops.overlap_table import OverlapTable, mask_predictions_to_foreground, remove_small_predictions

__all__ = [
    "DEFAULT_THRESHOLDS",
    "AVS_THRESHOLDS",
    "Assignment",
    "Matches",
    "detection_rates",
    "iou_pairs",
    "match_iou",
    "match_scores",
    "iou_metrics",
    "prepare_table",
    "aggregate_images",
    "threshold_key",
]

DEFAULT_THRESHOLDS: tuple[float, ...] = (0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9)
AVS_THRESHOLDS: tuple[float, ...] = (0.5, 0.6, 0.7, 0.8, 0.9)
Assignment = Literal["hungarian", "greedy"]


@dataclass(frozen=True)
class Matches:
    """Matched pairs with score >= threshold: ids (uint64) and their IoU (float64), one entry per pair."""

    gt_ids: np.ndarray
    pred_ids: np.ndarray
    scores: np.ndarray

    @property
    def tp(self) -> int:
        return int(self.gt_ids.size)


def threshold_key(prefix: str, t: float) -> str:
    """``threshold_key("S", 0.5) -> "S_0.5"``: the column name of a per-threshold value."""
    return f"{prefix}_{float(t):g}"


def detection_rates(tp: int, fp: int, fn: int) -> dict[str, float]:
    """precision, recall, f1 and s (= TP / (TP + FP + FN)) from counts; 0/0 -> 1 if FP = FN = 0, else 0.

    Examples
    --------
    >>> detection_rates(1, 1, 0)["s"]
    0.5
    >>> detection_rates(0, 0, 0)["f1"]
    1.0
    """
    perfect = 1.0 if fp == 0 and fn == 0 else 0.0

    def ratio(num: int, den: int) -> float:
        return num / den if den > 0 else perfect

    precision, recall = ratio(tp, tp + fp), ratio(tp, tp + fn)
    f1 = 2 * precision * recall / (precision + recall) if precision + recall > 0 else 0.0
    return {"precision": precision, "recall": recall, "f1": f1, "s": ratio(tp, tp + fp + fn)}


def prepare_table(table: OverlapTable, *, min_instance_size: int = 0, foreground_only: bool = False
                  ) -> OverlapTable:
    """Apply the prediction filters: first ``foreground_only`` (zero predictions on GT background), then
    removal of predicted instances with at most ``min_instance_size`` voxels (counted after masking)."""
    if foreground_only:
        table = mask_predictions_to_foreground(table)
    if min_instance_size > 0:
        table = remove_small_predictions(table, min_instance_size)
    return table


def iou_pairs(table: OverlapTable) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """All overlapping foreground pairs: (gt ids, pred ids, IoU), sorted by (gt, pred)."""
    fg = (table.pair_gt != 0) & (table.pair_pred != 0)
    g, p, c = table.pair_gt[fg], table.pair_pred[fg], table.pair_count[fg]
    union = table.size_of_gt(g) + table.size_of_pred(p) - c
    return g, p, c / union


def match_iou(table: OverlapTable, threshold: float, assignment: Assignment = "hungarian") -> Matches:
    """Match GT and predicted instances at IoU >= ``threshold`` (see the module docstring)."""
    g, p, iou = iou_pairs(table)
    gt_inst, pred_inst = table.gt_instances, table.pred_instances
    return match_scores(g, p, iou, gt_inst.size, pred_inst.size, threshold, assignment, strict=False)


def match_scores(g: np.ndarray, p: np.ndarray, score: np.ndarray, n_gt: int, n_pred: int, threshold: float,
                 assignment: Assignment, *, strict: bool) -> Matches:
    """One-to-one matching of sparse scored pairs; a pair qualifies with score >= t (> t when ``strict``)."""
    cand = score > threshold if strict else score >= threshold
    if not cand.any():
        return Matches(np.zeros(0, np.uint64), np.zeros(0, np.uint64), np.zeros(0))
    if assignment == "greedy":
        return _greedy(g[cand], p[cand], score[cand])
    if assignment != "hungarian":
        raise ValueError(f"assignment must be 'hungarian' or 'greedy', got {assignment!r}")
    return _hungarian(g, p, score, cand, n_gt, n_pred, threshold, strict)


def iou_metrics(table: OverlapTable, thresholds: Sequence[float] = DEFAULT_THRESHOLDS,
                assignment: Assignment = "hungarian") -> dict[str, Any]:
    """Per-threshold counts and rates, avS and ``S_<t>`` columns of one image (filters already applied).

    Returns a JSON-ready dict: ``n_gt``, ``n_pred``, ``per_threshold`` (list of dicts with threshold, tp,
    fp, fn, precision, recall, f1, s, mean_matched_iou), ``avS`` (None unless 0.5 ... 0.9 are all among
    the thresholds), and ``S_<t>`` / ``F1_<t>`` for each threshold.
    """
    n_gt, n_pred = int(table.gt_instances.size), int(table.pred_instances.size)
    g, p, iou = iou_pairs(table)
    rows = []
    for t in thresholds:
        m = match_scores(g, p, iou, n_gt, n_pred, float(t), assignment, strict=False)
        tp = m.tp
        row: dict[str, Any] = {"threshold": float(t), "tp": tp, "fp": n_pred - tp, "fn": n_gt - tp}
        row.update(detection_rates(tp, n_pred - tp, n_gt - tp))
        row["mean_matched_iou"] = float(m.scores.mean()) if tp else 0.0
        rows.append(row)
    return {"n_gt": n_gt, "n_pred": n_pred, "per_threshold": rows, **_columns(rows)}


def threshold_rows(results: Sequence[Mapping[str, Any]]
                   ) -> tuple[dict[str, int], list[dict[str, Any]], list[dict[str, Any]]]:
    """Counts of images/instances and the per-threshold rows of a list of per-image results: rates
    averaged over images (``mean``) and TP/FP/FN summed with rates from the sums (``pooled``)."""
    thresholds = [r["threshold"] for r in results[0]["per_threshold"]]
    mean_rows, pooled_rows = [], []
    for k, t in enumerate(thresholds):
        rows = [r["per_threshold"][k] for r in results]
        mean_rows.append({"threshold": t, **{key: float(np.mean([row[key] for row in rows]))
                                             for key in ("precision", "recall", "f1", "s")}})
        tp, fp, fn = (int(sum(row[key] for row in rows)) for key in ("tp", "fp", "fn"))
        pooled_rows.append({"threshold": t, "tp": tp, "fp": fp, "fn": fn, **detection_rates(tp, fp, fn)})
    n = {"n_images": len(results), "n_gt": int(sum(r["n_gt"] for r in results)),
         "n_pred": int(sum(r["n_pred"] for r in results))}
    return n, mean_rows, pooled_rows


def aggregate_images(results: Sequence[Mapping[str, Any]]) -> dict[str, dict[str, Any]]:
    """``mean``: per-image rates averaged over images (the paper's aggregation); ``pooled``: TP, FP, FN
    summed over images (instance-level), rates from the sums. Both with avS and per-threshold columns."""
    if not results:
        return {"mean": {}, "pooled": {}}
    n, mean_rows, pooled_rows = threshold_rows(results)
    return {"mean": {**n, "per_threshold": mean_rows, **_columns(mean_rows)},
            "pooled": {**n, "per_threshold": pooled_rows, **_columns(pooled_rows)}}


# --------------------------------------------------------------------------------------------- helpers


def _columns(rows: Sequence[Mapping[str, Any]]) -> dict[str, Any]:
    by_t = {round(r["threshold"], 9): r for r in rows}
    avs = ([by_t[t]["s"] for t in AVS_THRESHOLDS] if all(t in by_t for t in AVS_THRESHOLDS) else None)
    out: dict[str, Any] = {"avS": float(np.mean(avs)) if avs is not None else None}
    out.update({threshold_key("S", r["threshold"]): r["s"] for r in rows})
    out.update({threshold_key("F1", r["threshold"]): r["f1"] for r in rows})
    return out


def _greedy(g: np.ndarray, p: np.ndarray, s: np.ndarray) -> Matches:
    order = np.lexsort((p, g, -s))
    used_g: set[int] = set()
    used_p: set[int] = set()
    keep = []
    for k in order:
        gi, pi = int(g[k]), int(p[k])
        if gi not in used_g and pi not in used_p:
            used_g.add(gi)
            used_p.add(pi)
            keep.append(k)
    idx = np.array(keep, dtype=np.int64)
    return Matches(g[idx], p[idx], s[idx])


def _hungarian(g: np.ndarray, p: np.ndarray, s: np.ndarray, cand: np.ndarray, n_gt: int, n_pred: int,
               threshold: float, strict: bool) -> Matches:
    # dense indices over the instances that take part in some pair
    gu, gi = np.unique(g, return_inverse=True)
    pu, pi = np.unique(p, return_inverse=True)
    n_nodes = gu.size + pu.size
    graph = coo_matrix((np.ones(int(cand.sum())), (gi[cand], gu.size + pi[cand])), shape=(n_nodes, n_nodes))
    _, comp = connected_components(graph, directed=False)
    # a pair belongs to a component when both its ends do; candidate pairs always do
    pair_comp = np.where(comp[gi] == comp[gu.size + pi], comp[gi], -1)
    cand_comp = pair_comp[cand]
    n_cand = np.bincount(cand_comp, minlength=comp.max() + 1)

    single = cand.copy()
    single[cand] = n_cand[cand_comp] == 1
    out_g, out_p, out_s = [g[single]], [p[single]], [s[single]]

    multi = np.flatnonzero(n_cand > 1)
    if multi.size:
        scale = 2.0 * max(1, min(n_gt, n_pred))
        sel = np.flatnonzero(np.isin(pair_comp, multi))
        sel = sel[np.argsort(pair_comp[sel], kind="stable")]
        bounds = np.flatnonzero(np.diff(pair_comp[sel])) + 1
        for part in np.split(sel, bounds):
            rows, r = np.unique(gi[part], return_inverse=True)
            cols, c = np.unique(pi[part], return_inverse=True)
            mat = np.zeros((rows.size, cols.size))
            mat[r, c] = s[part]
            ok = mat > threshold if strict else mat >= threshold
            ri, ci = linear_sum_assignment(-ok.astype(float) - mat / scale)
            hit = ok[ri, ci]
            out_g.append(gu[rows[ri[hit]]])
            out_p.append(pu[cols[ci[hit]]])
            out_s.append(mat[ri[hit], ci[hit]])
    mg, mp, ms = np.concatenate(out_g), np.concatenate(out_p), np.concatenate(out_s)
    order = np.argsort(mg, kind="stable")
    return Matches(mg[order], mp[order], ms[order])
