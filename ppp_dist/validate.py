"""Stage validate: sweep checkpoints x assembly parameters on validation data and pick the best.

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

import dataclasses
import itertools
import json
import logging
import math
import time
from pathlib import Path
from typing import Any

from ppp_dist.config import PipelineConfig
from ppp_dist.config.sections import GRID_POSTPROCESS_KEYS
from ppp_dist.errors import ConfigError

logger = logging.getLogger(__name__)

BEST_FILE = Path("val") / "best.json"
RESULTS_FILE = Path("val") / "results.json"


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


def with_vote(config: PipelineConfig, params: dict[str, Any]) -> PipelineConfig:
    """``config`` with ``params`` written into ``[vote]`` (``min_instance_size`` into ``[postprocess]``),
    validated like any config."""
    post = {k: v for k, v in params.items() if k in GRID_POSTPROCESS_KEYS}
    vote = dataclasses.replace(config.vote, **{k: v for k, v in params.items() if k not in post})
    postprocess = dataclasses.replace(config.postprocess, **post)
    problems = vote.problems() + postprocess.problems()
    if problems:
        raise ConfigError("; ".join(problems))
    return dataclasses.replace(config, vote=vote, postprocess=postprocess)


def _metric(result: dict[str, Any], metric: str, pooled: bool) -> float:
    table = result["pooled"] if pooled and result.get("pooled") else result["mean"]
    value = table.get(metric)
    if not isinstance(value, (int, float)):
        available = sorted(k for k, v in table.items() if isinstance(v, (int, float)))
        raise ConfigError(f"[validation] metric = {metric!r} is not among the evaluation results; "
                          f"choose one of {', '.join(available)}")
    return float(value)


def _checkpoints(config: PipelineConfig, exp_dir: Path) -> tuple[list[int], dict[int, Path]]:
    from ppp_dist.model import list_checkpoints

    found = dict(list_checkpoints(exp_dir / "train"))
    wanted = list(config.validation.checkpoints) or sorted(found)
    missing = [c for c in wanted if c not in found]
    if not wanted or missing:
        raise ConfigError(f"validate needs checkpoints in {exp_dir / 'train'}: "
                          + (f"no checkpoint for iteration(s) {missing} (found {sorted(found)})" if missing
                             else "none found; train first"))
    return wanted, found


def sweep(config: PipelineConfig, exp_dir: Path, samples: list[str], folder: str) -> list[dict[str, Any]]:
    """Predict, label and evaluate ``samples`` for every checkpoint x parameter set under ``exp_dir/folder``.

    Returns one entry per (checkpoint, set): ``checkpoint``, ``params``, ``name``, the metric's value and
    ``images`` (the per-sample evaluation results, for pooling across folds).
    """
    from ppp_dist.evaluate import evaluate_with_config
    from ppp_dist.label import INSTANCES_KEY, label_volume
    from ppp_dist.learning.predict import predict_volume

    wanted, found = _checkpoints(config, exp_dir)
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


def _best(entries: list[dict[str, Any]], metric: str) -> dict[str, Any]:
    """The entry with the highest metric (NaN never wins; ties: the first, i.e. earliest checkpoint)."""
    return max(entries, key=lambda r: -math.inf if math.isnan(r[metric]) else r[metric])


def _without_images(entry: dict[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in entry.items() if k != "images"}


def run_validate(config: PipelineConfig, exp_dir: Path) -> dict[str, Any]:
    """Run the sweep on ``[data] val_data``; return ``{"results": [...], "best": {...}}`` (also in val/)."""
    from ppp_dist.learning.sampling import list_sample_paths

    exp_dir = Path(exp_dir)
    samples = list_sample_paths(config.data.val_data, "val_data")
    started = time.perf_counter()
    entries = sweep(config, exp_dir, samples, "val")
    best = _without_images(_best(entries, config.validation.metric))
    summary = {"metric": config.validation.metric, "samples": samples,
               "results": [_without_images(e) for e in entries], "best": best,
               "seconds": time.perf_counter() - started}
    (exp_dir / RESULTS_FILE).parent.mkdir(parents=True, exist_ok=True)
    (exp_dir / RESULTS_FILE).write_text(json.dumps(summary, indent=2))
    (exp_dir / BEST_FILE).write_text(json.dumps(best, indent=2))
    return summary


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
    entries = [sweep(config, exp_dir, samples, f"cv/fold{k}") for k, samples in enumerate(folds)]
    chosen, images = [], []
    for k in (0, 1):
        best = _best(entries[k], metric)  # chosen on fold k, applied to the other fold
        other = next(e for e in entries[1 - k] if e["checkpoint"] == best["checkpoint"]
                     and e["name"] == best["name"])
        chosen.append({"chosen_on": config.data.cross_val_folds[k], "applied_to": config.data.cross_val_folds[1 - k],
                       **_without_images(best), f"{metric}_on_other_fold": other[metric]})
        images += other["images"]
    aggregate = aggregate_cldice(images) if config.evaluation.criterion == "cldice" else aggregate_images(images)
    summary = {"metric": metric, "folds": folds, "chosen": chosen, "pooled": aggregate["pooled"],
               "mean": aggregate["mean"]}
    path = exp_dir / "cv" / "cross_validate.json"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(summary, indent=2, default=_plain))
    return summary


def _plain(value: Any) -> Any:
    """JSON for the numpy scalars the metric tables may hold."""
    if hasattr(value, "item"):
        return value.item()
    raise TypeError(f"cannot write {type(value).__name__} as JSON")


def read_best(exp_dir: Path) -> dict[str, Any] | None:
    """The best (checkpoint, params) of an earlier validate run, or None."""
    path = Path(exp_dir) / BEST_FILE
    if not path.is_file():
        return None
    best = json.loads(path.read_text())
    best["params"] = {k: tuple(v) if isinstance(v, list) else v for k, v in best["params"].items()}
    return best
