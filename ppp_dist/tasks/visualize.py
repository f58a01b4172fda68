"""Task visualize: pictures a person can look at, as PNG.

* ``patches.png``: a mosaic of predicted patches next to the ground-truth patches at sampled foreground
  voxels (the central z-slice of each patch; 2D patches as they are).
* ``mip_foreground.png`` / ``mip_instances.png``: max-intensity projections along z of the predicted
  foreground probability and of the instances (one colour per instance).
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from ppp_dist.config import PipelineConfig
from ppp_dist.experiment import INSTANCES, INSTANCES_KEY, PREDICTION, VISUALIZE
from ppp_dist.tasks.base import TaskContext, TaskResult

if TYPE_CHECKING:
    from ppp_dist.tasks.preflight import Preflight

logger = logging.getLogger(__name__)

NAME = "visualize"
SUMMARY = "PNG patch mosaics (predicted vs ground truth) and max projections"
UPSTREAM: tuple[str, ...] = ("predict", "decode")
INPUT = "a prediction group"


def preflight(check: Preflight) -> None:
    group = check.input_of(NAME, PREDICTION)
    if group is not None:
        check.prediction_group(group, NAME)
    check.output(VISUALIZE, "the pictures into")


def run(ctx: TaskContext) -> TaskResult:
    prediction = ctx.upstream(NAME, UPSTREAM, ctx.experiment.output(PREDICTION), INPUT)
    instances = ctx.experiment.output(INSTANCES) / INSTANCES_KEY
    written = run_visualize(ctx.config, prediction, ctx.experiment.output(VISUALIZE),
                            instances=str(instances) if instances.exists() else None,
                            ground_truth=ctx.config.data.ground_truth or None)
    print(f"visualize: {', '.join(written.values())}")
    return TaskResult(outputs=dict(written))


def _probabilities(array_path: str) -> np.ndarray:
    from ppp_dist.io import volumes

    data = np.asarray(volumes.open_array(array_path)[...])
    return data.astype(np.float32) / np.float32(255.0 if data.dtype == np.uint8 else 1.0)


def _foreground(numinst_path: str) -> np.ndarray:
    """P(foreground) (Z, Y, X): 1 - P(no instance) for a numinst head, the fg channel otherwise."""
    prob = _probabilities(numinst_path)
    return 1.0 - prob[0] if prob.shape[0] > 1 else prob[0]


def patch_mosaic(patches: np.ndarray, gt_patches: np.ndarray | None, points: np.ndarray,
                 patch_shape: tuple[int, int, int]) -> np.ndarray:
    """(rows, cols) image: per sampled voxel, the predicted patch (and the GT patch to its right).

    patches, gt_patches : (P, Z, Y, X) in [0, 1]; points : (N, 3) voxel coordinates.
    """
    pz, py, px = patch_shape
    tiles = []
    for z, y, x in points:
        pred = patches[:, z, y, x].reshape(patch_shape)[pz // 2]
        row = [pred, np.full((py, 1), np.nan)]
        if gt_patches is not None:
            row.append(gt_patches[:, z, y, x].reshape(patch_shape)[pz // 2].astype(np.float32))
        tiles.append(np.concatenate(row, axis=1))
    columns = max(1, int(np.ceil(np.sqrt(len(tiles)))))
    blank = np.full_like(tiles[0], np.nan)
    tiles += [blank] * (-len(tiles) % columns)
    rows = [np.concatenate(sum(([t, np.full((t.shape[0], 2), np.nan)] for t in tiles[r:r + columns]), []), axis=1)
            for r in range(0, len(tiles), columns)]
    return np.concatenate(sum(([r, np.full((2, r.shape[1]), np.nan)] for r in rows), []), axis=0)


def run_visualize(config: PipelineConfig, prediction: str, out_dir: Path, *, instances: str | None = None,
                  ground_truth: str | None = None, n_patches: int = 36) -> dict[str, Any]:
    """Write the PNGs into ``out_dir``; return their paths."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from ppp_dist.io import volumes
    from ppp_dist.ops.patches import patch_targets

    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    written: dict[str, Any] = {}
    from ppp_dist.pipeline.settings import prediction_arrays

    patches_path, numinst_path = prediction_arrays(prediction)
    fg = _foreground(numinst_path)
    patches = _probabilities(patches_path)
    candidates = np.argwhere(fg > 0.5)
    if len(candidates):
        rng = np.random.default_rng(config.general.seed)
        points = candidates[np.sort(rng.choice(len(candidates), min(n_patches, len(candidates)), replace=False))]
        gt_patches = None
        if ground_truth:
            gt = np.asarray(volumes.open_array(ground_truth)[...])
            gt_patches = patch_targets(gt if gt.ndim == 4 else gt[None], config.model.patch_shape)
        mosaic = patch_mosaic(patches, gt_patches, points, config.model.patch_shape)
        fig, ax = plt.subplots(figsize=(8, 8 * mosaic.shape[0] / max(mosaic.shape[1], 1)))
        ax.imshow(np.ma.masked_invalid(mosaic), cmap="viridis", vmin=0, vmax=1, interpolation="nearest")
        ax.set_title("predicted patch" + (" | ground truth" if gt_patches is not None else "")
                     + f" at {len(points)} foreground voxels (central z-slice)", fontsize=9)
        ax.axis("off")
        written["patches"] = str(out_dir / "patches.png")
        fig.savefig(written["patches"], dpi=120, bbox_inches="tight")
        plt.close(fig)
    fig, ax = plt.subplots(figsize=(6, 6))
    ax.imshow(fg.max(axis=0), cmap="magma", vmin=0, vmax=1)
    ax.set_title("foreground probability, max projection along z", fontsize=9)
    ax.axis("off")
    written["mip_foreground"] = str(out_dir / "mip_foreground.png")
    fig.savefig(written["mip_foreground"], dpi=120, bbox_inches="tight")
    plt.close(fig)
    if instances:
        labels = np.asarray(volumes.open_array(instances)[...])
        labels = labels[0] if labels.ndim == 4 else labels
        mip = labels.max(axis=0)
        colours = np.random.default_rng(0).uniform(0.2, 1.0, (int(mip.max()) + 1, 3))
        colours[0] = 0
        fig, ax = plt.subplots(figsize=(6, 6))
        ax.imshow(colours[mip])
        ax.set_title(f"{int(len(np.unique(labels)) - 1)} instances, max projection along z", fontsize=9)
        ax.axis("off")
        written["mip_instances"] = str(out_dir / "mip_instances.png")
        fig.savefig(written["mip_instances"], dpi=120, bbox_inches="tight")
        plt.close(fig)
    logger.info("visualize: wrote %s", ", ".join(written.values()))
    return written
