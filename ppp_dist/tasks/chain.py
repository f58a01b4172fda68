"""Running a task list (``ppp-dist label``, ``ppp-dist infer``, ``--do ...``) inside one experiment folder.

``--input`` is the input of the first task of the chain (the volume for predict, the prediction group for
decode/label, the labels for postprocess/evaluate); later tasks read what their upstream task wrote
(``ppp_dist.tasks`` lists the names).

Before anything is written, :class:`ppp_dist.tasks.preflight.Preflight` runs every task's ``preflight``: what
the whole chain will need (config, inputs and their shapes, NaNs in floating-point inputs, checkpoints, output
locations, the graph database, the scheduler), so a mistake ends in one sentence with exit code 2 and leaves
no experiment folder, no partial array and no changed output behind
(``tests/bad_input/test_bad_input_sweep.py``, ``docs/errors.md``).
"""

from __future__ import annotations

import argparse
import contextlib
import logging
import sys
from pathlib import Path

import tomli_w

from ppp_dist import tasks
from ppp_dist.config import PipelineConfig, load_config
from ppp_dist.experiment import check_experiment_location, experiment_configs, open_experiment
from ppp_dist.lock import ExperimentLock, check_free
from ppp_dist.logs import setup_logging
from ppp_dist.tasks.base import CommandContext, TaskContext
from ppp_dist.tasks.preflight import Preflight

logger = logging.getLogger(__name__)


def dispatch(args: argparse.Namespace, do_tasks: list[str] | None) -> int:
    """Run a parsed command line: a stand-alone command, or a task list in one experiment folder."""
    if args.command in tasks.COMMANDS:
        module, ctx = tasks.task(args.command), CommandContext(args, command_overrides(args))
        module.preflight(ctx)
        return 0 if module.run(ctx).ok else 1
    return run_tasks(args, do_tasks or [args.command], command_overrides(args))


def run_tasks(args: argparse.Namespace, names: list[str], overrides: list[str]) -> int:
    """Run task names (groups expanded) in pipeline order inside one experiment folder."""
    from ppp_dist.tasks.image_input import convert_input, is_image

    exp_dir = Path(args.exp) if args.exp else None
    check_experiment_location(root=args.root, exp=exp_dir)
    if exp_dir is not None:
        check_free(exp_dir)  # another run of this experiment: refused before anything is read or written
    user_configs = checkpoint_layers(args) + list(args.config)
    configs = experiment_configs(exp_dir, user_configs) if exp_dir is not None else user_configs
    config = load_config(configs, overrides)  # config errors first, before anything is written
    order = tuple(_drop_implied(tasks.expand(names), names, config))
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
    from ppp_dist.tasks import label

    experiment, order = context.experiment, context.order
    chained = _blockwise_chain(order, experiment.config)
    for name in order:
        if name in chained[1:]:
            continue  # ran inside the blockwise predict -> label pipeline
        logger.info("task %s", name)
        run = label.run_from_raw if chained and name == chained[0] else tasks.TASKS[name].run
        if not run(context).ok:
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


def command_overrides(args: argparse.Namespace) -> list[str]:
    """The ``--set`` overrides of a command line, with its --input, --gt, --checkpoint, --init and --scheduler."""
    out = list(getattr(args, "overrides", []))
    if getattr(args, "input", None):
        out.append(f"data.input={_toml_string(args.input)}")
    if getattr(args, "gt", None):
        out.append(f"data.ground_truth={_toml_string(args.gt)}")
    if getattr(args, "checkpoint", None):
        out.append(f"prediction.checkpoint={_toml_string(args.checkpoint)}")
    if getattr(args, "init", None):
        out.append(f"training.init_checkpoint={_toml_string(args.init)}")
    if getattr(args, "scheduler", None):
        out += ['cluster.kind="scheduler"', f"cluster.scheduler_address={_toml_string(args.scheduler)}"]
    return out


def checkpoint_layers(args: argparse.Namespace) -> list[Path]:
    """The config layer of ``--checkpoint`` / ``--init`` (below the user's --config files); none when an
    experiment is resumed (its saved config has the settings already)."""
    from ppp_dist.errors import CheckpointError
    from ppp_dist.learning.checkpoint_config import config_layer

    path = getattr(args, "checkpoint", None) or getattr(args, "init", None)
    if not path or getattr(args, "exp", None):
        return []
    if not Path(path).is_file():
        flag = "--checkpoint" if getattr(args, "checkpoint", None) else "--init"
        raise CheckpointError(f"{flag} {path} does not exist; give a checkpoint file (.pt)")
    return [config_layer(path)]


def _toml_string(text: str) -> str:
    return tomli_w.dumps({"v": text})[4:].strip()
