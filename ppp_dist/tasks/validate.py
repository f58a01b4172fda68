"""Task validate: sweep checkpoints x assembly parameters on validation data and pick the best.

The grid is the original's, plus ``min_instance_size`` (which sets ``[postprocess]``): lists named in
``[validation] zip_keys`` are zipped element-wise, the other ``[validation.grid]`` lists form a Cartesian
product, and the parameter sets are zip x product (an empty
grid validates the ``[vote]`` values as they are). For every checkpoint the validation samples are
predicted once (``val/processed/<checkpoint>/``); every parameter set labels them
(``val/instanced/<checkpoint>/<set>/``) and evaluates them (``val/evaluated/...``) with ``[evaluation]``.
The score of a (checkpoint, set) is the mean over samples of ``[validation] metric`` (or, with
``[evaluation] average_over_samples = false``, the pooled value). Everything goes to ``val/results.json``;
the best entry to ``val/best.json``, which ``[prediction] checkpoint = "best"`` reads.
"""

from __future__ import annotations

import itertools
import json
import logging
import math
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ppp_dist.config import PipelineConfig, with_vote
from ppp_dist.errors import ConfigError
from ppp_dist.experiment import INSTANCES_KEY, VAL, ExperimentPaths
from ppp_dist.tasks.base import TaskContext, TaskResult

if TYPE_CHECKING:
    from ppp_dist.tasks.preflight import Preflight

logger = logging.getLogger(__name__)

NAME = "validate"
SUMMARY = "sweep checkpoints x assembly parameters on validation data, pick the best"
UPSTREAM: tuple[str, ...] = ()


def preflight(check: Preflight) -> None:
    check.metric()
    check.device("prediction", check.config.prediction.device)
    check.samples("val_data")
    check.checkpoints(NAME)
    check.output(VAL, "validation results into")


def run(ctx: TaskContext) -> TaskResult:
    summary = run_validate(ctx.config, ctx.experiment.path)
    best = summary["best"]
    print(f"validate: {len(summary['results'])} (checkpoint, parameter set) pairs on {len(summary['samples'])} "
          f"sample(s); best {summary['metric']} {best[summary['metric']]:.4f} at checkpoint {best['checkpoint']} "
          f"with {best['name']} -> {ctx.experiment.val_results}")
    return TaskResult(outputs={"results": str(ctx.experiment.val_results), "best": str(ctx.experiment.best_file)},
                      summary=summary)


def parameter_sets(config: PipelineConfig) -> list[dict[str, Any]]:
    """The sweep's parameter sets, zip x product, in a stable order; ``[{}]`` for an empty grid."""
    grid = config.validation.grid
    zipped = [k for k in config.validation.zip_keys if k in grid]
    product_keys = [k for k in grid if k not in zipped]
    zip_rows = list(zip(*(grid[k] for k in zipped))) if zipped else [()]
    sets = []
    for zip_values in zip_rows:
        for product_values in itertools.product(*(grid[k] for k in product_keys)):
            sets.append(dict(zip(zipped, zip_values)) | dict(zip(product_keys, product_values)))
    return sets


def set_name(params: dict[str, Any]) -> str:
    """A folder name for a parameter set, e.g. ``patch_threshold=0.5,partition=connected_components``."""
    if not params:
        return "vote_defaults"
    return ",".join(f"{k}={_short(v)}" for k, v in params.items())


def _short(value: Any) -> str:
    if isinstance(value, (tuple, list)):
        return "_".join(_short(v) for v in value)
    return f"{value:g}" if isinstance(value, float) else str(value)


def _metric(result: dict[str, Any], metric: str, pooled: bool) -> float:
    table = result["pooled"] if pooled and result.get("pooled") else result["mean"]
    value = table.get(metric)
    if not isinstance(value, (int, float)):
        available = sorted(k for k, v in table.items() if isinstance(v, (int, float)))
        raise ConfigError(f"[validation] metric = {metric!r} is not among the evaluation results; "
                          f"choose one of {', '.join(available)}")
    return float(value)


def sweep_checkpoints(config: PipelineConfig, paths: ExperimentPaths, task: str = NAME
                      ) -> tuple[list[int], dict[int, Path]]:
    """The iterations ``task`` sweeps ([validation] checkpoints, default all) and every checkpoint found;
    ConfigError if one is missing or there is none."""
    found = paths.checkpoints()
    wanted = list(config.validation.checkpoints) or sorted(found)
    missing = [c for c in wanted if c not in found]
    if not wanted or missing:
        raise ConfigError(f"{task} needs checkpoints in {paths.train_dir}: "
                          + (f"no checkpoint for iteration(s) {missing} (found {sorted(found)})" if missing
                             else "none found; train first"))
    return wanted, found


def sweep(config: PipelineConfig, exp_dir: Path, samples: list[str], folder: str, task: str = NAME
          ) -> list[dict[str, Any]]:
    """Predict, label and evaluate ``samples`` for every checkpoint x parameter set under ``exp_dir/folder``.

    Returns one entry per (checkpoint, set): ``checkpoint``, ``params``, ``name``, the metric's value and
    ``images`` (the per-sample evaluation results, for pooling across folds).
    """
    from ppp_dist.pipeline.predict import predict_volume
    from ppp_dist.tasks.evaluation import evaluate_with_config
    from ppp_dist.tasks.label import label_volume

    wanted, found = sweep_checkpoints(config, ExperimentPaths(exp_dir), task)
    ev, metric = config.evaluation, config.validation.metric
    root = exp_dir / folder
    entries = []
    for iteration in wanted:
        predictions = []
        for sample in samples:
            out = root / "processed" / str(iteration) / Path(sample).name
            if config.general.overwrite or not (out / "patches").exists():
                predict_volume(config, found[iteration], f"{sample}/{config.data.raw_key}", out)
            predictions.append(out)
        for params in parameter_sets(config):
            # in one process: validation volumes are small, and blockwise equals whole-volume (tested)
            run_config = with_vote(config, {"blockwise": False, **params})
            name = set_name(params)
            instances = []
            for sample, prediction in zip(samples, predictions):
                out = root / "instanced" / str(iteration) / name / Path(sample).name
                label_volume(run_config, prediction, out)
                instances.append(f"{out}/{INSTANCES_KEY}")
            result = evaluate_with_config(ev, instances, [f"{s}/{config.data.gt_key}" for s in samples],
                                          root / "evaluated" / str(iteration) / name, write_images=False)
            score = _metric(result, metric, not ev.average_over_samples)
            entries.append({"checkpoint": iteration, "params": params, "name": name, metric: score,
                            "images": result["images"]})
            logger.info("%s: checkpoint %d, %s: %s = %.4f", folder, iteration, name, metric, score)
    return entries


def best_entry(entries: list[dict[str, Any]], metric: str) -> dict[str, Any]:
    """The entry with the highest metric (NaN never wins; ties: the first, i.e. earliest checkpoint)."""
    return max(entries, key=lambda r: -math.inf if math.isnan(r[metric]) else r[metric])


def without_images(entry: dict[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in entry.items() if k != "images"}


def run_validate(config: PipelineConfig, exp_dir: Path) -> dict[str, Any]:
    """Run the sweep on ``[data] val_data``; return ``{"results": [...], "best": {...}}`` (also in val/)."""
    from ppp_dist.learning.sampling import list_sample_paths

    exp_dir = Path(exp_dir)
    samples = list_sample_paths(config.data.val_data, "val_data")
    started = time.perf_counter()
    entries = sweep(config, exp_dir, samples, VAL)
    best = without_images(best_entry(entries, config.validation.metric))
    summary = {"metric": config.validation.metric, "samples": samples,
               "results": [without_images(e) for e in entries], "best": best,
               "seconds": time.perf_counter() - started}
    paths = ExperimentPaths(exp_dir)
    paths.val_results.parent.mkdir(parents=True, exist_ok=True)
    paths.val_results.write_text(json.dumps(summary, indent=2))
    paths.best_file.write_text(json.dumps(best, indent=2))
    return summary
