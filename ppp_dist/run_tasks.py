"""Running task lists (``ppp-dist label``, ``ppp-dist infer``, ``--do ...``) inside one experiment folder.

Outputs flow between tasks through fixed names in the experiment folder:

    train    -> train/checkpoint_<iteration>.pt
    predict  -> prediction.zarr   (numinst or fg, patches or codes)
    decode   -> prediction.zarr   (patches from codes)
    label    -> instances.zarr/instances
    postprocess -> postprocessed.zarr/instances
    evaluate -> evaluation/       (report.md, results.json, CSVs, PNGs)

``--input`` is the input of the first task of the chain (the volume for predict, the prediction group for
decode/label, the labels for postprocess/evaluate); later tasks read what their upstream task wrote.

Before anything is written, :class:`ppp_dist.preflight.Preflight` checks what the whole chain will need (config,
inputs and their shapes, NaNs in floating-point inputs, checkpoints, output locations, the graph database, the
scheduler), so a mistake ends in one sentence with exit code 2 and leaves no experiment folder, no partial
array and no changed output behind (``tests/bad_input/test_bad_input_sweep.py``, ``docs/errors.md``).
"""

from __future__ import annotations

import argparse
import contextlib
import logging
import sys
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from ppp_dist import tasks
from ppp_dist.config import PipelineConfig, load_config
from ppp_dist.errors import ConfigError
from ppp_dist.experiment import (
    INSTANCES,
    POSTPROCESSED,
    PREDICTION,
    Experiment,
    check_experiment_location,
    experiment_configs,
    open_experiment,
)
from ppp_dist.lock import ExperimentLock, check_free
from ppp_dist.logs import setup_logging
from ppp_dist.preflight import Preflight

logger = logging.getLogger(__name__)



@dataclass(frozen=True)
class TaskContext:
    experiment: Experiment
    order: tuple[str, ...]
    explicit_input: str | None  # --input of this command line, if any
    lock: ExperimentLock | None = None  # held for the whole run (the blockwise stages add the database row)

    @property
    def config(self) -> PipelineConfig:
        return self.experiment.config

    def upstream(self, task: str, produced: Path, fallback_what: str) -> str:
        """The input of a task: its upstream task's output when that ran in this chain; else --input;
        else what an earlier run left in the folder; else [data] input."""
        if any(t in self.order for t in tasks.UPSTREAM[task]):
            return str(produced)
        if self.explicit_input:
            return self.explicit_input
        if produced.exists():
            return str(produced)
        if self.config.data.input:
            return self.config.data.input
        raise ConfigError(f"{task} needs {fallback_what}: run the upstream task in this experiment or pass "
                          "--input")  # only reachable when resuming a folder that lacks it




def run_tasks(args: argparse.Namespace, names: list[str], overrides: list[str]) -> int:
    """Run task names (groups expanded) in pipeline order inside one experiment folder."""
    from ppp_dist.commands import checkpoint_layers
    from ppp_dist.image_input import convert_input, is_image

    exp_dir = Path(args.exp) if args.exp else None
    check_experiment_location(root=args.root, exp=exp_dir)
    if exp_dir is not None:
        check_free(exp_dir)  # another run of this experiment: refused before anything is read or written
    user_configs = checkpoint_layers(args) + list(args.config)
    configs = experiment_configs(exp_dir, user_configs) if exp_dir is not None else user_configs
    config = load_config(configs, overrides)  # config errors first, before anything is written
    order = tuple(_drop_implied(tasks.expand(names), names, config))
    tasks.check_available(list(order))
    explicit_input = getattr(args, "input", None)
    Preflight(order, config, explicit_input, exp_dir).run()
    command = "ppp-dist " + " ".join(names)  # never the arguments: a --set may hold a password
    with contextlib.ExitStack() as held:
        lock = held.enter_context(ExperimentLock(exp_dir, command).acquire()) if exp_dir is not None else None
        experiment = open_experiment(root=args.root, exp=args.exp, configs=user_configs, overrides=overrides)
        if lock is None:  # a new folder: nobody else knows it yet
            lock = held.enter_context(ExperimentLock(experiment.path, command).acquire())
        setup_logging("DEBUG" if args.verbose else experiment.config.general.log_level, experiment.log_path)
        print(f"experiment folder: {experiment.path}")
        if is_image(explicit_input):
            converted = convert_input(explicit_input, experiment.path)
            print(f"input: {explicit_input} converted to {converted}")
            explicit_input = converted
        return _run_order(TaskContext(experiment, order, explicit_input, lock))


def _run_order(context: TaskContext) -> int:
    experiment, order = context.experiment, context.order
    chained = _blockwise_chain(order, experiment.config)
    for name in order:
        if name in chained[1:]:
            continue  # ran inside the blockwise predict -> label pipeline
        logger.info("task %s", name)
        handler = _predict_label_blockwise if chained and name == chained[0] else HANDLERS[name]
        if handler(context) is False:
            print(f"ppp-dist: {name} finished with failed blocks (see the summary above); run the same command "
                  "again to retry them", file=sys.stderr)
            return 1
    return 0


def _blockwise_chain(order: tuple[str, ...], config: PipelineConfig) -> tuple[str, ...]:
    """predict (-> decode) -> label of one command run as one blockwise pipeline (predict on the workers,
    fused when [prediction] store_patches = false); () when the chain is not there or label is in-process."""
    if not config.vote.blockwise or "predict" not in order or "label" not in order:
        return ()
    start, end = order.index("predict"), order.index("label")
    chain = order[start:end + 1]
    return chain if set(chain) <= {"predict", "decode", "label"} else ()


def _drop_implied(order: list[str], names: list[str], config: PipelineConfig) -> list[str]:
    """As in the original: a group runs decode only for ppp+dec and validate only for checkpoint "best"; and
    evaluate only with a ground truth (``ppp-dist infer`` on a user's own images has none)."""
    implied = {"decode": config.model.head != "codes", "validate": config.prediction.checkpoint != "best",
               "evaluate": not config.data.ground_truth}
    return [t for t in order if t in names or not implied.get(t, False)]


def _train(ctx: TaskContext) -> None:
    from ppp_dist.learning.train import run_train

    summary = run_train(ctx.config, ctx.experiment.path)
    if summary["iterations_run"] == 0:
        print(f"train: done already, {summary['iterations']} iterations "
              f"(max_iterations {ctx.config.training.max_iterations}), checkpoint {summary['checkpoint']}")
        return
    print(f"train: {summary['iterations']} iterations ({summary['iterations_run']} now, "
          f"{summary['it_per_s']:.2f} it/s), final loss {summary['final_loss']:.4f}, "
          f"checkpoint {summary['checkpoint']}")


def _validate(ctx: TaskContext) -> None:
    from ppp_dist.validate import run_validate

    summary = run_validate(ctx.config, ctx.experiment.path)
    best = summary["best"]
    print(f"validate: {len(summary['results'])} (checkpoint, parameter set) pairs on {len(summary['samples'])} "
          f"sample(s); best {summary['metric']} {best[summary['metric']]:.4f} at checkpoint {best['checkpoint']} "
          f"with {best['name']} -> {ctx.experiment.path / 'val' / 'results.json'}")


def _cross_validate(ctx: TaskContext) -> None:
    from ppp_dist.validate import run_cross_validate

    summary = run_cross_validate(ctx.config, ctx.experiment.path)
    metric = summary["metric"]
    value = summary["pooled"].get(metric, summary["mean"].get(metric))
    print(f"cross_validate: pooled {metric} {value:.4f} over both folds, each with the setup chosen on the "
          f"other -> {ctx.experiment.path / 'cv' / 'cross_validate.json'}")


def _visualize(ctx: TaskContext) -> None:
    from ppp_dist.label import INSTANCES_KEY
    from ppp_dist.visualize import run_visualize

    prediction = ctx.upstream("visualize", ctx.experiment.output(PREDICTION), "a prediction group")
    instances = ctx.experiment.output(INSTANCES) / INSTANCES_KEY
    written = run_visualize(ctx.config, prediction, ctx.experiment.output("visualize"),
                            instances=str(instances) if instances.exists() else None,
                            ground_truth=ctx.config.data.ground_truth or None)
    print(f"visualize: {', '.join(written.values())}")


def _vote_config(ctx: TaskContext) -> PipelineConfig:
    """The config label uses: with checkpoint = "best", the validated [vote] parameters (as the original)."""
    from ppp_dist.validate import read_best, with_vote

    if ctx.config.prediction.checkpoint != "best":
        return ctx.config
    best = read_best(ctx.experiment.path)
    return with_vote(ctx.config, best["params"]) if best else ctx.config


def _checkpoint(ctx: TaskContext) -> Path:
    from ppp_dist.model import resolve_checkpoint

    return resolve_checkpoint(ctx.experiment.path, ctx.config.prediction.checkpoint)


def _predict(ctx: TaskContext) -> None:
    from ppp_dist.learning.predict import predict_volume

    source = ctx.explicit_input or ctx.config.data.input
    output = ctx.experiment.output(PREDICTION)
    summary = predict_volume(ctx.config, _checkpoint(ctx), source, output)
    print(f"predict: {source} -> {output} ({summary.get('seconds', 0):.1f} s)")


def _decode(ctx: TaskContext) -> None:
    from ppp_dist.learning.decode import decode_volume

    store = ctx.upstream("decode", ctx.experiment.output(PREDICTION), "a prediction group with codes")
    summary = decode_volume(ctx.config, _checkpoint(ctx), store)
    print(f"decode: {summary['voxels_decoded']} voxels decoded into {summary['output']}")


def _label(ctx: TaskContext) -> bool:
    from ppp_dist.label import label_volume

    prediction = ctx.upstream("label", ctx.experiment.output(PREDICTION), "a prediction group (patches + numinst)")
    if ctx.config.vote.blockwise:
        return _label_blockwise(ctx, prediction)
    output = ctx.experiment.output(INSTANCES)
    summary = label_volume(_vote_config(ctx), prediction, output)
    print(f"label: {summary['instances']} instances from {summary['selected_patches']} patches "
          f"({summary['foreground_voxels']} foreground voxels) in {summary['seconds']:.2f} s -> {output}/instances")
    _warn_if_empty(ctx, summary["instances"], prediction)
    return True


def _warn_if_empty(ctx: TaskContext, instances: int, prediction: str | None) -> None:
    """An all-background prediction is no error (label writes an all-zero volume) but deserves one line."""
    if instances == 0:
        print(f"ppp-dist: warning: label found no instances in {prediction}: it is all background at [vote] "
              f"numinst_thresholds = {list(ctx.config.vote.numinst_thresholds)}, so the instances are all 0",
              file=sys.stderr)


def _predict_label_blockwise(ctx: TaskContext) -> bool:
    """predict (-> decode) -> vote -> agglomerate -> paint on the dask cluster: the network runs on the workers
    (GPU workers with [cluster] kind = "cuda"); with [prediction] store_patches = false fused, storing no patches."""
    return _label_blockwise(ctx, None, raw=ctx.explicit_input or ctx.config.data.input)


def _label_blockwise(ctx: TaskContext, prediction: str | None, raw: str | None = None) -> bool:
    """vote -> agglomerate -> paint on the dask cluster of [cluster]; the output equals the in-process label.
    With ``raw``: predict first, blockwise (or fused), instead of reading ``prediction``."""
    from ppp_dist.cluster import close_cluster, dashboard_link, start_cluster
    from ppp_dist.io.database import open_database
    from ppp_dist.pipeline.infer import run_pipeline

    with open_database(ctx.config.database, ctx.experiment.path) as db:  # one database, one experiment
        db.claim(ctx.experiment.id, str(ctx.experiment.path.resolve()))
    if ctx.lock is not None:
        ctx.lock.hold_database(ctx.config.database)  # the run holds the database too (a copied folder, ...)
    # batch-system worker jobs write their output next to the driver's logs/run.log
    client = start_cluster(ctx.config.cluster, log_directory=ctx.experiment.path / "logs" / "jobs")
    print(f"dask dashboard: {dashboard_link(client, ctx.config.cluster)}", flush=True)
    try:
        if raw is not None:
            result = run_pipeline(_vote_config(ctx), ctx.experiment.path, client=client, raw=raw,
                                  checkpoint=_checkpoint(ctx), progress=True)
        else:
            result = run_pipeline(_vote_config(ctx), ctx.experiment.path, client=client, prediction=prediction,
                                  progress=True)
    finally:
        close_cluster(client)
    for stage in result["stages"].values():
        print(stage["format"])
    if not result["ok"]:
        return False
    if raw is not None:
        where = result["prediction"] or "not stored: fused predict -> vote"
        print(f"predict: {raw} -> {where} (blockwise on the workers)")
    print(f"label: {result['instances']} instances (blockwise) -> {result['output']}")
    _warn_if_empty(ctx, result["instances"], prediction or raw)
    return True


def _postprocess(ctx: TaskContext) -> None:
    from ppp_dist.label import INSTANCES_KEY, postprocess_volume

    source = ctx.upstream("postprocess", ctx.experiment.output(INSTANCES) / INSTANCES_KEY, "instance labels")
    output = ctx.experiment.output(POSTPROCESSED)
    summary = postprocess_volume(ctx.config, source, output)
    print(f"postprocess: {summary['instances_before']} -> {summary['instances']} instances -> {output}/instances")


def _evaluate(ctx: TaskContext) -> None:
    from ppp_dist.evaluate import evaluate_with_config
    from ppp_dist.label import INSTANCES_KEY

    produced = ctx.experiment.output(POSTPROCESSED) / INSTANCES_KEY
    if not produced.exists() and "postprocess" not in ctx.order:
        produced = ctx.experiment.output(INSTANCES) / INSTANCES_KEY
    prediction = ctx.upstream("evaluate", produced, "predicted labels")
    out_dir = ctx.experiment.output("evaluation")
    result = evaluate_with_config(ctx.config.evaluation, [prediction], [ctx.config.data.ground_truth], out_dir)
    print(summary_line(result))
    print(f"report: {out_dir / 'report.md'}")


def summary_line(result: dict) -> str:
    """One line with the headline numbers of an evaluation result."""
    mean = result["mean"]
    keys = ("avS", "S_0.5", "avF1", "C", "S", "v_rand", "v_info")
    parts = [f"{k} {mean[k]:.4f}" for k in keys if isinstance(mean.get(k), float)]
    return "evaluation: " + (", ".join(parts) if parts else "no scores")


HANDLERS: dict[str, Callable[[TaskContext], bool | None]] = {  # False: finished with failed blocks
    "train": _train, "validate": _validate, "predict": _predict, "decode": _decode, "label": _label,
    "postprocess": _postprocess, "evaluate": _evaluate, "cross_validate": _cross_validate, "visualize": _visualize,
}
