"""The tasks of ``ppp-dist``, one module each, in pipeline order.

Names follow the original PatchPerPix ``--do`` tasks, so its users feel at home; ``infer`` and ``all`` are
the same task groups as there. Every task module exposes ``NAME``, ``SUMMARY``, ``UPSTREAM``,
``preflight(ctx)`` and ``run(ctx) -> TaskResult`` (``ppp_dist.tasks.base``).

The chain tasks run inside one experiment folder (``chain.run_tasks``) and pass their outputs on through
fixed names in it (``ppp_dist.experiment``):

    train          -> train/checkpoint_<iteration>.pt
    validate       -> val/results.json, val/best.json
    predict        -> prediction.zarr   (numinst or fg, patches or codes)
    decode         -> prediction.zarr   (patches from codes)
    label          -> instances.zarr/instances
    postprocess    -> postprocessed.zarr/instances
    evaluate       -> evaluation/       (report.md, results.json, CSVs, PNGs)
    cross_validate -> cv/cross_validate.json
    visualize      -> visualize/        (PNGs)

The commands ``plan``, ``status``, ``show-config`` and ``demo`` stand alone. Modules here that are not tasks
hold what the tasks share: ``base`` (the task interface), ``chain`` (running a task list), ``preflight``
(the checks that follow the volumes through a chain), ``evaluation`` and ``report`` (scoring and its
reports), ``convert`` and ``image_input`` (TIFF/PNG/HDF5 to zarr).
"""

from __future__ import annotations

import importlib

from ppp_dist.tasks.base import TaskModule, TaskResult

#: the chain tasks, in pipeline order
CHAIN = ("train", "validate", "predict", "decode", "label", "postprocess", "evaluate", "cross_validate", "visualize")
#: the stand-alone commands (command name -> module name)
COMMANDS = {"plan": "plan", "status": "status", "show-config": "show_config", "demo": "demo"}

GROUPS: dict[str, tuple[str, ...]] = {
    "infer": ("predict", "decode", "label", "evaluate"),
    "all": ("train", "validate", "predict", "decode", "label", "postprocess", "evaluate"),
}


def task(name: str) -> TaskModule:
    """The module of a chain task or command (``show-config`` or ``show_config``)."""
    module: TaskModule = importlib.import_module(f"ppp_dist.tasks.{COMMANDS.get(name, name)}")
    return module


#: chain task name -> its module
TASKS: dict[str, TaskModule] = {name: task(name) for name in CHAIN}


def expand(names: list[str] | tuple[str, ...]) -> list[str]:
    """Expand task groups and keep pipeline order, each task once."""
    wanted: set[str] = set()
    for name in names:
        wanted.update(GROUPS.get(name, (name,)))
    return [name for name in CHAIN if name in wanted]


__all__ = ["CHAIN", "COMMANDS", "GROUPS", "TASKS", "TaskResult", "expand", "task"]
