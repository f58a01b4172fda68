"""Command status: what an experiment folder holds and which blockwise stages are done; reads only."""

from __future__ import annotations

from pathlib import Path

from ppp_dist.config import PipelineConfig, load_config
from ppp_dist.errors import ConfigError
from ppp_dist.experiment import (
    CONFIG_NAME,
    EVALUATION,
    INSTANCES,
    POSTPROCESSED,
    PREDICTION,
    ExperimentPaths,
    experiment_configs,
)
from ppp_dist.tasks.base import CommandContext, TaskResult

NAME = "status"
SUMMARY = "what an experiment folder holds and which stages are done"
UPSTREAM: tuple[str, ...] = ()


def preflight(ctx: CommandContext) -> None:
    path = Path(ctx.args.exp)
    if not path.is_dir():
        raise ConfigError(f"experiment folder {path} does not exist")
    if not (path / CONFIG_NAME).is_file():
        raise ConfigError(f"{path} is not a ppp_dist experiment folder (no {CONFIG_NAME})")


def run(ctx: CommandContext) -> TaskResult:
    """Print what an experiment folder holds."""
    paths = ExperimentPaths(Path(ctx.args.exp))
    path = paths.path
    config = load_config(experiment_configs(path, []))  # reads only: a read-only folder is fine
    print(f"experiment {path}")
    print(f"  config   {paths.config_path} (input: {config.data.input or '-'}, patches {config.model.patch_shape})")
    outputs = sorted(p.name for p in path.iterdir() if p.suffix in (".zarr", ".sqlite", ".csv", ".json", ".md"))
    print(f"  outputs  {', '.join(outputs) if outputs else 'none yet'}")
    checkpoints = paths.checkpoints()
    report = paths.output(EVALUATION) / "report.md"
    latest = checkpoints[max(checkpoints)].name if checkpoints else ""
    produced = {
        "train": f"{len(checkpoints)} checkpoint(s), latest {latest}" if checkpoints else "",
        "predict": PREDICTION if paths.output(PREDICTION).is_dir() else "",
        "label": INSTANCES if paths.output(INSTANCES).is_dir() else "",
        "postprocess": POSTPROCESSED if paths.output(POSTPROCESSED).is_dir() else "",
        "evaluate": f"{EVALUATION}/report.md" if report.is_file() else "",
    }
    for name, what in produced.items():
        print(f"  {name:<12} {'done: ' + what if what else 'not run'}")
    _print_lock(path)
    _print_ledger(config, path)
    return TaskResult(summary={"produced": produced})


def _print_lock(path: Path) -> None:
    """The run that holds the experiment, if any (``ppp_dist.lock``)."""
    from ppp_dist.lock import LOCK_NAME, read_holder

    holder = read_holder(path / LOCK_NAME)
    if holder is not None:
        gone = holder.gone()
        print(f"  lock     {'stale (' + gone + ')' if gone else 'running'}: {holder.describe()}")


def _print_ledger(config: PipelineConfig, path: Path) -> None:
    """The blockwise stages' progress, from the graph database (created by nobody here)."""
    from ppp_dist.io.database import inspect_database, open_read_only, sqlite_path
    from ppp_dist.io.graph_store import GraphStore
    from ppp_dist.pipeline.ledger import Ledger

    if config.database.backend != "postgres" and not sqlite_path(config.database, path).is_file():
        return  # status creates no database
    inspect_database(config.database, path)  # a foreign or damaged database is refused before it is read
    db = open_read_only(config.database, path)  # reads only: works on a read-only experiment too
    if db is None:
        return
    try:
        table = Ledger(GraphStore(db)).status_table()
    finally:
        db.close()
    print("  blockwise stages (ledger):")
    print("\n".join(f"    {line}" for line in table.splitlines()) if table.count("\n") > 1 else "    none run yet")
