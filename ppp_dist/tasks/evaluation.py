"""The evaluation: score predicted instances against ground truth, write CSV/JSON/TOML/markdown reports.

Inputs are ``"path.zarr/key"`` strings naming label arrays: ``(Y, X)``, ``(Z, Y, X)`` or channel stacks
``(K, Z, Y, X)`` (ids unique across channels, 0 = background; OME-Zarr axes are honoured, so a
``(c, y, x)`` array is a 2D stack). GT and prediction must have the same spatial shape.

``criterion="iou"``: the GT x prediction overlap table is accumulated blockwise with dask when
``block_shape`` is given (one small task per block that opens zarr itself and returns a sparse count
table, then a tree reduction of tables), so a volume larger than memory can be evaluated; every IoU and
ISBI quantity is derived from that table. Without ``block_shape`` the arrays are read whole.
``criterion="cldice"`` needs skeletons of whole instances and reads both volumes whole (for now).
"""

from __future__ import annotations

import logging
import os
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any, Literal

import numpy as np

from ppp_dist.errors import ConfigError, InputDataError
from ppp_dist.geometry import Box, tile
from ppp_dist.ops.metrics_cldice import aggregate_cldice, cldice_metrics, filter_predictions
from ppp_dist.ops.metrics_iou import DEFAULT_THRESHOLDS, Assignment, aggregate_images, iou_metrics, prepare_table
from ppp_dist.ops.metrics_isbi import isbi_scores
from ppp_dist.ops.overlap_table import OverlapTable, merge_tables, overlap_table

logger = logging.getLogger(__name__)

__all__ = ["evaluate_files", "evaluate_with_config", "evaluate_arrays", "compute_overlap_table", "read_labels",
           "label_projection"]

Criterion = Literal["iou", "cldice"]


def evaluate_files(predictions: Sequence[str], ground_truths: Sequence[str], out_dir: Path | str, *,
                   criterion: Criterion = "iou", assignment: Assignment | None = None,
                   thresholds: Sequence[float] = DEFAULT_THRESHOLDS, min_instance_size: int = 0,
                   foreground_only: bool = False, isbi: bool = False,
                   block_shape: Sequence[int] | None = None, client: Any = None,
                   write_images: bool = True) -> dict[str, Any]:
    """Evaluate each prediction against its ground truth and write the reports into ``out_dir``.

    Parameters
    ----------
    predictions, ground_truths : equally long lists of ``"path.zarr/key"`` label arrays.
    criterion : ``"iou"`` (S_t, avS; §6.2) or ``"cldice"`` (FlyLight/FISBe avF1, C, S, FS, FM; §6.4).
    assignment : ``"hungarian"`` or ``"greedy"``; default hungarian for iou, greedy for cldice.
    thresholds : matching thresholds (exact decimals); avS / avF1 need 0.5 ... 0.9 / 0.1 ... 0.9.
    min_instance_size : predicted instances with at most this many voxels are removed first.
    foreground_only : set predictions to 0 where the GT is background before matching.
    isbi : also compute the ISBI 2012 V_Rand / V_Info scores (flat labels only).
    block_shape : (Z, Y, X) block in voxels for the blockwise table (best a multiple of the zarr chunks);
        None reads each volume whole.
    client : a ``distributed.Client`` to run the blocks on; None uses dask's threaded scheduler.
    write_images : write the threshold plot and per-sample overlay PNGs.

    Returns
    -------
    dict with ``config``, ``images`` (one result dict per sample), ``mean`` and ``pooled`` aggregates and
    ``files`` (the paths written); the same content as results.json.
    """
    from ppp_dist.tasks import report  # matplotlib is imported only when reports are written

    if len(predictions) != len(ground_truths):
        raise ConfigError(f"got {len(predictions)} predictions but {len(ground_truths)} ground truths; "
                          "give one ground truth per prediction")
    if not predictions:
        raise ConfigError("no predictions to evaluate")
    assignment = _check_options(criterion, assignment, thresholds, min_instance_size, block_shape)
    out_dir = Path(out_dir)
    images: list[dict[str, Any]] = []
    projections: list[tuple[np.ndarray, np.ndarray, tuple[int, int]]] = []
    for pred_spec, gt_spec in zip(predictions, ground_truths):
        t0 = time.perf_counter()
        result = _evaluate_one(os.fspath(pred_spec), os.fspath(gt_spec), criterion, assignment, thresholds,
                               min_instance_size, foreground_only, isbi, block_shape, client)
        result["seconds"] = time.perf_counter() - t0
        result["name"] = _sample_name(os.fspath(pred_spec), len(images))
        images.append(result)
        logger.info("evaluated %s in %.1f s", pred_spec, result["seconds"])
        if write_images:
            projections.append((label_projection(gt_spec, client=client),
                                label_projection(pred_spec, client=client),
                                _yx(read_labels(os.fspath(gt_spec), lazy=True).spatial_shape)))
    agg = aggregate_cldice(images) if criterion == "cldice" else aggregate_images(images)
    if isbi:
        for key in ("v_rand", "v_info", "v_rand_split", "v_rand_merge", "v_info_split", "v_info_merge"):
            agg["mean"][key] = float(np.mean([r["isbi"][key] for r in images]))
    results: dict[str, Any] = {
        "config": {"criterion": criterion, "assignment": assignment,
                   "thresholds": [float(t) for t in thresholds], "min_instance_size": int(min_instance_size),
                   "foreground_only": bool(foreground_only), "isbi": bool(isbi),
                   "block_shape": list(block_shape) if block_shape is not None else None},
        "images": images, "mean": agg["mean"], "pooled": agg["pooled"],
    }
    out_dir.mkdir(parents=True, exist_ok=True)  # only now: a sample that cannot be read leaves nothing behind
    results["files"] = report.write_reports(results, out_dir, projections if write_images else None)
    return results


def evaluate_with_config(evaluation: Any, predictions: Sequence[str], ground_truths: Sequence[str],
                         out_dir: Path | str, *, write_images: bool | None = None) -> dict[str, Any]:
    """``evaluate_files`` with the settings of an ``[evaluation]`` config section."""
    return evaluate_files(predictions, ground_truths, out_dir, criterion=evaluation.criterion,
                          assignment=None if evaluation.assignment == "auto" else evaluation.assignment,
                          thresholds=evaluation.thresholds, min_instance_size=evaluation.min_instance_size,
                          foreground_only=evaluation.foreground_only, isbi=evaluation.isbi_scores,
                          block_shape=evaluation.block_shape,
                          write_images=evaluation.write_images if write_images is None else write_images)


def evaluate_arrays(gt: np.ndarray, pred: np.ndarray, *, criterion: Criterion = "iou",
                    assignment: Assignment | None = None, thresholds: Sequence[float] = DEFAULT_THRESHOLDS,
                    min_instance_size: int = 0, foreground_only: bool = False, isbi: bool = False
                    ) -> dict[str, Any]:
    """The per-image result of ``evaluate_files`` for in-memory label arrays (no files written)."""
    assignment = _check_options(criterion, assignment, thresholds, min_instance_size, None)
    table = overlap_table(gt, pred) if (criterion == "iou" or isbi) else None
    return _metrics(gt, pred, table, criterion, assignment, thresholds, min_instance_size, foreground_only,
                    isbi)


def compute_overlap_table(gt_spec: str, pred_spec: str, *, block_shape: Sequence[int] | None = None,
                          client: Any = None, fan_in: int = 8) -> OverlapTable:
    """The overlap table of two zarr label arrays, whole or accumulated over blocks with dask.

    Each task carries only the two paths and a ``Box``; the worker reads the box of both arrays and
    returns its sparse table; tables are merged in a tree of width ``fan_in``. The result is identical
    to the whole-array table for any block shape.
    """
    gt_arr, pred_arr = read_labels(gt_spec, lazy=True), read_labels(pred_spec, lazy=True)
    _check_same_space(gt_spec, gt_arr, pred_spec, pred_arr)
    spatial = gt_arr.spatial_shape
    if block_shape is None:
        return overlap_table(gt_arr.read(Box.from_shape(spatial)), pred_arr.read(Box.from_shape(spatial)))
    import dask
    from dask import delayed

    boxes = [spec.write_box for spec in tile(spatial, tuple(block_shape))]
    level = [delayed(_block_table, pure=True)(gt_spec, pred_spec, box, dask_key_name=f"eval-block-{i}")
             for i, box in enumerate(boxes)]
    depth = 0
    while len(level) > 1:
        depth += 1
        level = [delayed(_merge, pure=True)(*level[i:i + fan_in], dask_key_name=f"eval-merge-{depth}-{i}")
                 for i in range(0, len(level), fan_in)]
    logger.info("overlap table of %s: %d blocks of %s", pred_spec, len(boxes), tuple(block_shape))
    if client is not None:
        return client.compute(level[0]).result()
    (table,) = dask.compute(level[0], scheduler="threads")
    return table


class _Labels:
    """A zarr label array seen as a channel stack (K, Z, Y, X); reads boxes of the spatial axes."""

    def __init__(self, spec: str) -> None:
        from ppp_dist.io.ome import spatial_ndim
        from ppp_dist.io.volumes import open_array

        self.spec = spec
        self.arr = open_array(spec)
        if self.arr.dtype.kind not in "uib":
            raise InputDataError(f"{spec}: labels must have an integer dtype, got {self.arr.dtype}")
        n_sp = spatial_ndim(self.arr)
        lead = self.arr.ndim - n_sp
        if n_sp not in (2, 3) or lead not in (0, 1):
            raise InputDataError(f"{spec}: labels must be (Y, X), (Z, Y, X) or (K, Z, Y, X) (or a 2D "
                                 f"stack (K, Y, X) with OME axes); got shape {self.arr.shape}")
        self.n_spatial, self.lead = n_sp, lead
        sp = tuple(self.arr.shape[lead:])
        self.spatial_shape: tuple[int, int, int] = (1, *sp) if n_sp == 2 else sp  # type: ignore[assignment]

    def read(self, box: Box) -> np.ndarray:
        sl = box.slices if self.n_spatial == 3 else box.slices[1:]
        data = np.asarray(self.arr[(slice(None),) * self.lead + sl])
        if self.n_spatial == 2:
            data = data[..., None, :, :]
        if self.lead == 0:
            data = data[None]
        return data


def read_labels(spec: str, lazy: bool = False) -> Any:
    """Open ``spec``; with ``lazy`` the ``_Labels`` reader, otherwise the whole (K, Z, Y, X) array."""
    labels = _Labels(os.fspath(spec))
    return labels if lazy else labels.read(Box.from_shape(labels.spatial_shape))


def label_projection(spec: str, client: Any = None, max_side: int = 1024) -> np.ndarray:
    """2D max-intensity projection (over channels and Z) of a label array for the overlays, computed with
    dask on the zarr chunks and subsampled with one step on both axes to at most ``max_side`` pixels per side
    (the same step on Y and X keeps the image's aspect ratio)."""
    import dask.array as da

    labels = read_labels(spec, lazy=True)
    arr = da.from_zarr(labels.arr)
    step = max(1, -(-max(labels.spatial_shape[1:]) // max_side))
    sub = arr[(Ellipsis, slice(None, None, step), slice(None, None, step))]
    proj = sub.max(axis=tuple(range(sub.ndim - 2))) if sub.ndim > 2 else sub
    if client is not None:
        return np.asarray(client.compute(proj).result())
    return np.asarray(proj.compute(scheduler="threads"))


# --------------------------------------------------------------------------------------------- helpers


def _evaluate_one(pred_spec: str, gt_spec: str, criterion: Criterion, assignment: Assignment,
                  thresholds: Sequence[float], min_instance_size: int, foreground_only: bool, isbi: bool,
                  block_shape: Sequence[int] | None, client: Any) -> dict[str, Any]:
    table = None
    if criterion == "iou" or isbi:
        table = compute_overlap_table(gt_spec, pred_spec, block_shape=block_shape, client=client)
    gt = pred = None
    if criterion == "cldice":
        gt, pred = read_labels(gt_spec), read_labels(pred_spec)
        _check_same_space(gt_spec, gt, pred_spec, pred)
    result = _metrics(gt, pred, table, criterion, assignment, thresholds, min_instance_size,
                      foreground_only, isbi)
    return {"prediction": pred_spec, "ground_truth": gt_spec, **result}


def _metrics(gt: np.ndarray | None, pred: np.ndarray | None, table: OverlapTable | None, criterion: str,
             assignment: Assignment, thresholds: Sequence[float], min_instance_size: int,
             foreground_only: bool, isbi: bool) -> dict[str, Any]:
    result: dict[str, Any] = {}
    filtered = None
    if table is not None:
        filtered = prepare_table(table, min_instance_size=min_instance_size, foreground_only=foreground_only)
    if criterion == "iou":
        assert filtered is not None
        result.update(iou_metrics(filtered, thresholds, assignment))
    else:
        assert gt is not None and pred is not None
        pred = filter_predictions(gt, pred, min_instance_size=min_instance_size,
                                  foreground_only=foreground_only)
        result.update(cldice_metrics(gt, pred, thresholds, assignment))
    if isbi:
        assert filtered is not None
        result["isbi"] = isbi_scores(filtered)
    return result


def _check_options(criterion: str, assignment: str | None, thresholds: Sequence[float],
                   min_instance_size: int, block_shape: Sequence[int] | None) -> Assignment:
    problems = []
    if criterion not in ("iou", "cldice"):
        problems.append(f"criterion must be 'iou' or 'cldice', got {criterion!r}")
    if assignment is None:
        assignment = "greedy" if criterion == "cldice" else "hungarian"
    if assignment not in ("hungarian", "greedy"):
        problems.append(f"assignment must be 'hungarian' or 'greedy', got {assignment!r}")
    if not thresholds or any(not 0.0 <= float(t) <= 1.0 for t in thresholds):
        problems.append(f"thresholds must be a non-empty list of values in [0, 1], got {list(thresholds)}")
    if min_instance_size < 0:
        problems.append(f"min_instance_size must be >= 0, got {min_instance_size}")
    if block_shape is not None and (len(block_shape) != 3 or any(int(b) < 1 for b in block_shape)):
        problems.append(f"block_shape must be 3 positive voxel counts (Z, Y, X), got {list(block_shape)}")
    if problems:
        raise ConfigError("evaluation: " + "; ".join(problems))
    return assignment  # type: ignore[return-value]


def _check_same_space(gt_spec: str, gt: Any, pred_spec: str, pred: Any) -> None:
    gs = gt.spatial_shape if isinstance(gt, _Labels) else gt.shape[1:]
    ps = pred.spatial_shape if isinstance(pred, _Labels) else pred.shape[1:]
    if tuple(gs) != tuple(ps):
        raise InputDataError(f"ground truth {gt_spec} has spatial shape {tuple(gs)} but prediction "
                             f"{pred_spec} has {tuple(ps)}; they must cover the same voxels")


def _block_table(gt_spec: str, pred_spec: str, box: Box) -> OverlapTable:
    gt = read_labels(gt_spec, lazy=True).read(box)
    return overlap_table(gt, read_labels(pred_spec, lazy=True).read(box))


def _merge(*tables: OverlapTable) -> OverlapTable:
    return merge_tables(tables)


def _yx(spatial_shape: tuple[int, ...]) -> tuple[int, int]:
    """(Y, X) of a (Z, Y, X) shape: the full size that a label projection was subsampled from."""
    return int(spatial_shape[1]), int(spatial_shape[2])


def _sample_name(spec: str, index: int) -> str:
    parts = [p for p in spec.replace("\\", "/").split("/") if p]
    stem = next((p for p in parts if p.lower().endswith((".zarr", ".zip", ".zarr.zip"))), parts[-1])
    for suffix in (".zarr.zip", ".zarr", ".zip"):
        if stem.lower().endswith(suffix):
            stem = stem[: -len(suffix)]
            break
    return f"{index:03d}_{stem}"
