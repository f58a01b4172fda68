"""What every task module exposes, and what its ``preflight`` and ``run`` are given.

A task module (``ppp_dist/tasks/<name>.py``) has ``NAME``, ``SUMMARY`` (one line, shown by ``--help``),
``UPSTREAM`` (the tasks whose output it reads when they run before it in the same command), and

* ``preflight(ctx)``: every check that can be made before anything is written; raises one sentence
  (a ``PppDistError``, exit code 2). For the chain tasks ``ctx`` is :class:`ppp_dist.tasks.preflight.Preflight`,
  which follows the volumes through the whole chain; for the stand-alone commands it is a :class:`CommandContext`.
* ``run(ctx) -> TaskResult``: the task itself; for the chain tasks ``ctx`` is a :class:`TaskContext`.

Task modules import heavy libraries (torch, dask, numba, zarr) inside their functions, so that
``ppp-dist --help`` stays fast (tested).
"""

from __future__ import annotations

import argparse
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol

from ppp_dist.errors import ConfigError

if TYPE_CHECKING:
    from ppp_dist.config import PipelineConfig
    from ppp_dist.experiment import Experiment
    from ppp_dist.lock import ExperimentLock


@dataclass(frozen=True)
class TaskResult:
    """What a task did: ``ok`` False when blocks failed (the same command retries them; exit code 1)."""

    ok: bool = True
    outputs: dict[str, str] = field(default_factory=dict)  # what it wrote: name -> path
    summary: dict[str, Any] = field(default_factory=dict)  # its numbers (counts, seconds, scores)


class TaskModule(Protocol):
    NAME: str
    SUMMARY: str
    UPSTREAM: tuple[str, ...]

    def preflight(self, ctx: Any) -> None: ...

    def run(self, ctx: Any) -> TaskResult: ...


@dataclass(frozen=True)
class TaskContext:
    """A chain task's view of the run: the experiment, the other tasks of the command, its --input."""

    experiment: Experiment
    order: tuple[str, ...]
    explicit_input: str | None  # --input of this command line, if any
    lock: ExperimentLock | None = None  # held for the whole run (the blockwise stages add the database row)

    @property
    def config(self) -> PipelineConfig:
        return self.experiment.config

    def upstream(self, task: str, upstream: tuple[str, ...], produced: Path, fallback_what: str) -> str:
        """The input of ``task``: its upstream task's output when that ran in this chain; else --input;
        else what an earlier run left in the folder; else [data] input."""
        if any(t in self.order for t in upstream):
            return str(produced)
        if self.explicit_input:
            return self.explicit_input
        if produced.exists():
            return str(produced)
        if self.config.data.input:
            return self.config.data.input
        raise ConfigError(f"{task} needs {fallback_what}: run the upstream task in this experiment or pass "
                          "--input")  # only reachable when resuming a folder that lacks it

    def checkpoint(self) -> Path:
        """The checkpoint file of ``[prediction] checkpoint`` in this experiment."""
        return self.experiment.checkpoint(self.config.prediction.checkpoint)

    def vote_config(self) -> PipelineConfig:
        """The config label uses: with checkpoint = "best", the validated [vote] parameters (as the original)."""
        from ppp_dist.config import with_vote

        if self.config.prediction.checkpoint != "best":
            return self.config
        best = self.experiment.best()
        return with_vote(self.config, best["params"]) if best else self.config


@dataclass(frozen=True)
class CommandContext:
    """A stand-alone command's (plan, status, show-config, demo) parsed arguments and ``--set`` overrides."""

    args: argparse.Namespace
    overrides: list[str]
