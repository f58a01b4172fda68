"""What each ``ppp-dist`` sub-command does, once the arguments are parsed.

User-facing output of the CLI is printed here (and in ``cli.py``); the rest of the package only logs.
"""

from __future__ import annotations

import argparse
import logging
import math
from pathlib import Path

import tomli_w

from ppp_dist.config import PipelineConfig, load_config
from ppp_dist.config.loader import config_to_table
from ppp_dist.errors import ConfigError, InputDataError
from ppp_dist.experiment import CONFIG_NAME, experiment_configs
from ppp_dist.redact import MASK

logger = logging.getLogger(__name__)


def dispatch(args: argparse.Namespace, do_tasks: list[str] | None) -> int:
    if args.command == "plan":
        return plan(args)
    if args.command == "status":
        return status(args)
    if args.command == "show-config":
        return show_config(args)
    if args.command == "demo":
        from ppp_dist.demo import run_demo
        _check_demo(args)
        return run_demo(args)
    from ppp_dist.run_tasks import run_tasks
    return run_tasks(args, do_tasks or [args.command], _overrides(args))


def _check_demo(args: argparse.Namespace) -> None:
    """The user's part of a demo command (experiment folder, --config files, --set), before the demo writes."""
    from ppp_dist import demo
    from ppp_dist.experiment import check_experiment_location
    from ppp_dist.lock import check_free

    if args.workers < 1:
        raise ConfigError(f"--workers must be at least 1, got {args.workers}")
    check_experiment_location(root=args.root, exp=args.exp)
    if args.exp is not None:
        check_free(args.exp)
    try:
        base = [demo.sample_model()[1]] if hasattr(demo, "sample_model") else []
    except InputDataError:
        base = []  # the demo itself says that the sample model is missing
    load_config([*base, *args.config], [*getattr(demo, "DEMO_SETTINGS", ()), *args.overrides])


def _overrides(args: argparse.Namespace) -> list[str]:
    overrides = list(args.overrides)
    if getattr(args, "input", None):
        overrides.append(f"data.input={_toml_string(args.input)}")
    if getattr(args, "gt", None):
        overrides.append(f"data.ground_truth={_toml_string(args.gt)}")
    if getattr(args, "checkpoint", None):
        overrides.append(f"prediction.checkpoint={_toml_string(args.checkpoint)}")
    if getattr(args, "init", None):
        overrides.append(f"training.init_checkpoint={_toml_string(args.init)}")
    if getattr(args, "scheduler", None):
        overrides += ['cluster.kind="scheduler"', f"cluster.scheduler_address={_toml_string(args.scheduler)}"]
    return overrides


def checkpoint_layers(args: argparse.Namespace) -> list[Path]:
    """The config layer of ``--checkpoint`` / ``--init`` (below the user's --config files); none when an
    experiment is resumed (its saved config has the settings already)."""
    from ppp_dist.checkpoint_config import config_layer
    from ppp_dist.errors import CheckpointError

    path = getattr(args, "checkpoint", None) or getattr(args, "init", None)
    if not path or getattr(args, "exp", None):
        return []
    if not Path(path).is_file():
        flag = "--checkpoint" if getattr(args, "checkpoint", None) else "--init"
        raise CheckpointError(f"{flag} {path} does not exist; give a checkpoint file (.pt)")
    return [config_layer(path)]


def _toml_string(text: str) -> str:
    return tomli_w.dumps({"v": text})[4:].strip()


def _open_input(config: PipelineConfig):
    from ppp_dist.io import volumes
    if not config.data.input:
        raise ConfigError("this command needs a volume: pass --input PATH.zarr/KEY or set [data] input")
    array = volumes.open_array(config.data.input)
    if array.ndim not in (3, 4):
        raise InputDataError(f"{config.data.input} has {array.ndim} dimensions with shape {array.shape}; "
                             "expected (C, Z, Y, X) or (Z, Y, X)")
    volumes.check_real(array, config.data.input)
    volumes.check_not_empty(array, config.data.input)
    return array


def plan(args: argparse.Namespace) -> int:
    """Print the blocks, halos and memory per block of every stage for the input volume."""
    from ppp_dist.limits import check_volume
    from ppp_dist.plan import check_mws_budget, format_bytes, network_lines, plan_volume
    config = load_config(args.config, _overrides(args))
    array = _open_input(config)
    spatial = tuple(int(s) for s in array.shape[-3:])
    check_volume(spatial, str(config.data.input), config.vote.block_shape)
    channels = int(array.shape[0]) if array.ndim == 4 else 1
    if channels != config.data.num_channels:
        raise InputDataError(f"{config.data.input} has {channels} channels but [data] num_channels = "
                             f"{config.data.num_channels}; fix one of them")
    print(f"volume   {config.data.input}: {channels} channel(s) x {spatial} (Z, Y, X), {array.dtype}, "
          f"chunks {tuple(array.chunks)}")
    print(f"patches  {config.model.patch_shape} ({config.model.head}); vote block {config.vote.block_shape}")
    print(f"{'stage':<8} {'blocks':>7} {'block (Z,Y,X)':>16} {'halo':>13} {'memory/block':>13}  note")
    for stage in plan_volume(config, spatial):
        print(f"{stage.stage:<8} {stage.blocks:>7} {str(stage.block_shape):>16} {str(stage.halo):>13} "
              f"{format_bytes(stage.memory_bytes):>13}  {stage.note}")
    for line in network_lines(config, spatial):
        print(line)
    if config.vote.partition == "mutex_watershed":
        print(f"driver   {check_mws_budget(config, math.prod(spatial))}")
    print("nothing was written (dry run)")
    return 0


def status(args: argparse.Namespace) -> int:
    """Print what an experiment folder holds."""
    path = Path(args.exp)
    if not path.is_dir():
        raise ConfigError(f"experiment folder {path} does not exist")
    saved = path / CONFIG_NAME
    if not saved.is_file():
        raise ConfigError(f"{path} is not a ppp_dist experiment folder (no {CONFIG_NAME})")
    config = load_config(experiment_configs(path, []))  # reads only: a read-only folder is fine
    print(f"experiment {path}")
    print(f"  config   {saved} (input: {config.data.input or '-'}, patches {config.model.patch_shape})")
    outputs = sorted(p.name for p in path.iterdir() if p.suffix in (".zarr", ".sqlite", ".csv", ".json", ".md"))
    print(f"  outputs  {', '.join(outputs) if outputs else 'none yet'}")
    from ppp_dist.experiment import INSTANCES, POSTPROCESSED, PREDICTION

    checkpoints = sorted((path / "train").glob("checkpoint_*.pt"), key=lambda p: int(p.stem.split("_")[-1]))
    produced = {
        "train": f"{len(checkpoints)} checkpoint(s), latest {checkpoints[-1].name}" if checkpoints else "",
        "predict": PREDICTION if (path / PREDICTION).is_dir() else "",
        "label": INSTANCES if (path / INSTANCES).is_dir() else "",
        "postprocess": POSTPROCESSED if (path / POSTPROCESSED).is_dir() else "",
        "evaluate": "evaluation/report.md" if (path / "evaluation" / "report.md").is_file() else "",
    }
    for name, what in produced.items():
        print(f"  {name:<12} {'done: ' + what if what else 'not run'}")
    _print_lock(path)
    database = Path(config.database.path) if config.database.path else path / "graph.sqlite"
    if config.database.backend == "postgres" or database.is_file():  # status creates no database
        from ppp_dist.io.database import inspect_database, open_read_only
        from ppp_dist.io.graph_store import GraphStore
        from ppp_dist.ledger import Ledger

        inspect_database(config.database, path)  # a foreign or damaged database is refused before it is read
        db = open_read_only(config.database, path)  # reads only: works on a read-only experiment too
        if db is not None:
            try:
                table = Ledger(GraphStore(db)).status_table()
            finally:
                db.close()
            print("  blockwise stages (ledger):")
            print("\n".join(f"    {line}" for line in table.splitlines()) if table.count("\n") > 1
                  else "    none run yet")
    return 0


def _print_lock(path: Path) -> None:
    """The run that holds the experiment, if any (``ppp_dist.lock``)."""
    from ppp_dist.lock import LOCK_NAME, read_holder

    holder = read_holder(path / LOCK_NAME)
    if holder is not None:
        gone = holder.gone()
        print(f"  lock     {'stale (' + gone + ')' if gone else 'running'}: {holder.describe()}")


def show_config(args: argparse.Namespace) -> int:
    config = load_config(args.config, _overrides(args))
    print(tomli_w.dumps(config_to_table(config, mask=MASK)), end="")  # the DSN's password as ***
    return 0
