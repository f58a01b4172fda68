"""Task cross_validate: two folds; the setup is chosen on one fold and scored on the other, then pooled."""

from __future__ import annotations

import json
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ppp_dist.config import PipelineConfig
from ppp_dist.errors import ConfigError
from ppp_dist.experiment import CV, ExperimentPaths
from ppp_dist.tasks.base import TaskContext, TaskResult
from ppp_dist.tasks.validate import best_entry, sweep, without_images

if TYPE_CHECKING:
    from ppp_dist.tasks.preflight import Preflight

NAME = "cross_validate"
SUMMARY = "two folds: choose the setup on one fold, score it on the other, pool"
UPSTREAM: tuple[str, ...] = ()


def preflight(check: Preflight) -> None:
    check.metric()
    check.device("prediction", check.config.prediction.device)
    for key in check.config.data.cross_val_folds:
        check.samples(key)
    check.checkpoints(NAME)
    check.output(CV, "cross-validation results into")


def run(ctx: TaskContext) -> TaskResult:
    summary = run_cross_validate(ctx.config, ctx.experiment.path)
    metric = summary["metric"]
    value = summary["pooled"].get(metric, summary["mean"].get(metric))
    print(f"cross_validate: pooled {metric} {value:.4f} over both folds, each with the setup chosen on the "
          f"other -> {ctx.experiment.cv_results}")
    return TaskResult(outputs={"results": str(ctx.experiment.cv_results)}, summary=summary)


def run_cross_validate(config: PipelineConfig, exp_dir: Path) -> dict[str, Any]:
    """Two-fold cross-validation as the original did for FlyLight.

    The sweep runs on both folds (``[data] cross_val_folds`` names the two data keys); each fold's best
    setup is chosen on the other fold; the final numbers pool the per-sample results of both folds, each
    evaluated with the setup chosen on the other (``pooled``: instance counts summed; ``mean``: per sample).
    """
    from ppp_dist.learning.sampling import list_sample_paths
    from ppp_dist.ops.metrics_cldice import aggregate_cldice
    from ppp_dist.ops.metrics_iou import aggregate_images

    exp_dir = Path(exp_dir)
    metric = config.validation.metric
    folds = [list_sample_paths(getattr(config.data, key), key) for key in config.data.cross_val_folds]
    if len(folds) != 2:
        raise ConfigError(f"[data] cross_val_folds must name two data keys, got {config.data.cross_val_folds}")
    entries = [sweep(config, exp_dir, samples, f"{CV}/fold{k}", NAME) for k, samples in enumerate(folds)]
    chosen, images = [], []
    for k in (0, 1):
        best = best_entry(entries[k], metric)  # chosen on fold k, applied to the other fold
        other = next(e for e in entries[1 - k] if e["checkpoint"] == best["checkpoint"]
                     and e["name"] == best["name"])
        chosen.append({"chosen_on": config.data.cross_val_folds[k], "applied_to": config.data.cross_val_folds[1 - k],
                       **without_images(best), f"{metric}_on_other_fold": other[metric]})
        images += other["images"]
    aggregate = aggregate_cldice(images) if config.evaluation.criterion == "cldice" else aggregate_images(images)
    summary = {"metric": metric, "folds": folds, "chosen": chosen, "pooled": aggregate["pooled"],
               "mean": aggregate["mean"]}
    path = ExperimentPaths(exp_dir).cv_results
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(summary, indent=2, default=_plain))
    return summary


def _plain(value: Any) -> Any:
    """JSON for the numpy scalars the metric tables may hold."""
    if hasattr(value, "item"):
        return value.item()
    raise TypeError(f"cannot write {type(value).__name__} as JSON")
