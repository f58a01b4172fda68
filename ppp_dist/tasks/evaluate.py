"""Task evaluate: score the instances against the ground truth and write the report (``evaluation``)."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from ppp_dist.experiment import EVALUATION, INSTANCES, INSTANCES_KEY, POSTPROCESSED
from ppp_dist.tasks.base import TaskContext, TaskResult

if TYPE_CHECKING:
    from ppp_dist.tasks.preflight import Preflight

NAME = "evaluate"
SUMMARY = "compare instances with ground truth: S_t/avS, clDice avF1/C/S, ISBI scores"
UPSTREAM: tuple[str, ...] = ("label", "postprocess")
INPUT = "predicted labels"


def preflight(check: Preflight) -> None:
    produced = f"{POSTPROCESSED}/{INSTANCES_KEY}"
    if check.exp_dir is None or (not (check.exp_dir / produced).exists() and "postprocess" not in check.order):
        produced = f"{INSTANCES}/{INSTANCES_KEY}"
    spec = check.input_of(NAME, produced)
    gt = check.config.data.ground_truth
    gt_spatial = check.labels(gt)
    if spec is not None:
        check.same_space(check.labels(spec), f"the predicted labels {spec}")
    check.same_space(gt_spatial, f"the ground truth {gt}")
    check.output(EVALUATION, "the evaluation report into")


def run(ctx: TaskContext) -> TaskResult:
    from ppp_dist.tasks.evaluation import evaluate_with_config

    produced = ctx.experiment.output(POSTPROCESSED) / INSTANCES_KEY
    if not produced.exists() and "postprocess" not in ctx.order:
        produced = ctx.experiment.output(INSTANCES) / INSTANCES_KEY
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
