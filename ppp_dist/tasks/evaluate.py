"""Task evaluate: score the instances against the ground truth and write the report (``evaluation``)."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

from ppp_dist.experiment import EVALUATION, INSTANCES, INSTANCES_KEY, POSTPROCESSED
from ppp_dist.tasks.base import TaskContext, TaskResult

if TYPE_CHECKING:
    from ppp_dist.tasks.preflight import Preflight

NAME = "evaluate"
SUMMARY = "compare instances with ground truth: S_t/avS, clDice avF1/C/S, ISBI scores"
UPSTREAM: tuple[str, ...] = ("label", "postprocess")
INPUT = "predicted labels"


def _produced(folder: Path | None, order: tuple[str, ...]) -> str:
    """The labels evaluate scores inside the experiment folder: the postprocessed ones when postprocess runs
    in this command or ran before, else label's."""
    postprocessed = f"{POSTPROCESSED}/{INSTANCES_KEY}"
    if "postprocess" in order or (folder is not None and (folder / postprocessed).exists()):
        return postprocessed
    return f"{INSTANCES}/{INSTANCES_KEY}"


def preflight(check: Preflight) -> None:
    spec = check.input_of(NAME, _produced(check.exp_dir, check.order))
    gt = check.config.data.ground_truth
    gt_spatial = check.labels(gt)
    if spec is not None:
        check.same_space(check.labels(spec), f"the predicted labels {spec}")
    check.same_space(gt_spatial, f"the ground truth {gt}")
    check.output(EVALUATION, "the evaluation report into")


def run(ctx: TaskContext) -> TaskResult:
    from ppp_dist.tasks.evaluation import evaluate_with_config

    produced = ctx.experiment.output(_produced(ctx.experiment.path, ctx.order))
    prediction = ctx.upstream(NAME, UPSTREAM, produced, INPUT)
    out_dir = ctx.experiment.output(EVALUATION)
    result = evaluate_with_config(ctx.config.evaluation, [prediction], [ctx.config.data.ground_truth], out_dir)
    print(summary_line(result))
    print(f"report: {out_dir / 'report.md'}")
    return TaskResult(outputs={"report": str(out_dir / "report.md")}, summary=result)


def summary_line(result: dict[str, Any]) -> str:
    """One line with the headline numbers of an evaluation result."""
    mean = result["mean"]
    keys = ("avS", "S_0.5", "avF1", "C", "S", "v_rand", "v_info")
    parts = [f"{k} {mean[k]:.4f}" for k in keys if isinstance(mean.get(k), float)]
    return "evaluation: " + (", ".join(parts) if parts else "no scores")
