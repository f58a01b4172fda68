"""The tasks of the command line, in pipeline order, and which of them this version can run.

Names follow the original PatchPerPix ``--do`` tasks, so its users feel at home; ``infer`` and ``all`` are
the same task groups as there.
"""

from __future__ import annotations

from dataclasses import dataclass

from ppp_dist import __version__
from ppp_dist.errors import NotAvailableError


@dataclass(frozen=True)
class Task:
    name: str
    summary: str
    available: bool
    arrives_with: str = ""  # for tasks not implemented yet: the capability that brings them


TASKS: dict[str, Task] = {t.name: t for t in (
    Task("train", "fit a U-Net that predicts a patch (or a code) and numinst at every voxel", True),
    Task("validate", "sweep checkpoints x assembly parameters on validation data, pick the best", True),
    Task("predict", "run the network over a volume: fg/numinst and patches (or codes)", True),
    Task("decode", "ppp+dec: turn predicted codes into patch probabilities", True),
    Task("label", "assemble instances from the consensus of the predicted patches", True),
    Task("postprocess", "remove small instances, relabel, optionally dilate", True),
    Task("evaluate", "compare instances with ground truth: S_t/avS, clDice avF1/C/S, ISBI scores", True),
    Task("cross_validate", "two folds: choose the setup on one fold, score it on the other, pool", True),
    Task("visualize", "PNG patch mosaics (predicted vs ground truth) and max projections", True),
)}

#: the tasks whose output a task reads when they run before it in the same chain (else it reads --input)
UPSTREAM: dict[str, tuple[str, ...]] = {
    "decode": ("predict",), "label": ("predict", "decode"), "postprocess": ("label",),
    "evaluate": ("label", "postprocess"), "visualize": ("predict", "decode"),
}

GROUPS: dict[str, tuple[str, ...]] = {
    "infer": ("predict", "decode", "label", "evaluate"),
    "all": ("train", "validate", "predict", "decode", "label", "postprocess", "evaluate"),
}


def expand(names: list[str] | tuple[str, ...]) -> list[str]:
    """Expand task groups and keep pipeline order, each task once."""
    wanted: set[str] = set()
    for name in names:
        wanted.update(GROUPS.get(name, (name,)))
    return [name for name in TASKS if name in wanted]


def check_available(names: list[str]) -> None:
    """Raise one sentence naming the tasks this version cannot run yet; nothing has been done then."""
    missing = [TASKS[n] for n in names if not TASKS[n].available]
    if missing:
        which = ", ".join(f"{t.name} (arrives with {t.arrives_with})" for t in missing)
        raise NotAvailableError(f"ppp_dist {__version__} cannot run {which} yet; nothing was done")
