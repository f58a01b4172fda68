"""Task postprocess: remove small instances, relabel, optionally dilate (``ppp_dist.ops.postprocess``)."""

from __future__ import annotations

import math
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from ppp_dist import limits
from ppp_dist.config import PipelineConfig
from ppp_dist.errors import InputDataError
from ppp_dist.experiment import INSTANCES, INSTANCES_KEY, POSTPROCESSED
from ppp_dist.tasks.base import TaskContext, TaskResult

if TYPE_CHECKING:
    from ppp_dist.tasks.preflight import Preflight

NAME = "postprocess"
SUMMARY = "remove small instances, relabel, optionally dilate"
UPSTREAM: tuple[str, ...] = ("label",)
INPUT = "instance labels"


def preflight(check: Preflight) -> None:
    from ppp_dist.io import volumes

    spec = check.input_of(NAME, f"{INSTANCES}/{INSTANCES_KEY}")
    if spec is not None:
        arr = volumes.open_array(spec)
        if arr.ndim != 4:
            raise InputDataError(f"{spec} has shape {arr.shape}; postprocess needs instance channels (K, Z, Y, X)")
        if arr.dtype.kind not in "ui":
            raise InputDataError(f"{spec} has dtype {arr.dtype}; postprocess needs integer instance labels")
        volumes.check_not_empty(arr, spec)
        check.same_space(arr.shape[-3:], f"the instances {spec}")
        volumes.check_ids(arr, spec)
        limits.check_memory(math.prod(int(s) for s in arr.shape) * (arr.dtype.itemsize + 16),
                            f"postprocess of {spec} (in one process)", "postprocess a part of the volume")
    check.output(POSTPROCESSED, "the postprocessed instances")


def run(ctx: TaskContext) -> TaskResult:
    source = ctx.upstream(NAME, UPSTREAM, ctx.experiment.output(INSTANCES) / INSTANCES_KEY, INPUT)
    output = ctx.experiment.output(POSTPROCESSED)
    summary = postprocess_volume(ctx.config, source, output)
    print(f"postprocess: {summary['instances_before']} -> {summary['instances']} instances -> {output}/instances")
    return TaskResult(outputs={"instances": f"{output}/{INSTANCES_KEY}"}, summary=summary)


def postprocess_volume(config: PipelineConfig, instances: str, output: str | Path) -> dict[str, Any]:
    """Remove small instances, relabel, optionally dilate; write ``<output>/instances``."""
    from ppp_dist.io import volumes
    from ppp_dist.ops.postprocess import dilate, remove_small_and_relabel

    source = volumes.open_array(instances)
    labels = np.asarray(source[...])
    if labels.ndim != 4:
        raise InputDataError(f"{instances} has shape {labels.shape}; expected instance channels (K, Z, Y, X)")
    before = int(labels.max()) if labels.size else 0
    labels = remove_small_and_relabel(labels, config.postprocess.min_instance_size)
    if config.postprocess.dilate:
        labels = dilate(labels, config.postprocess.dilate)
    out = volumes.prepare_array(f"{str(output).rstrip('/')}/{INSTANCES_KEY}", shape=labels.shape,
                                chunks=source.chunks, dtype="uint32", overwrite=True, axes="czyx", kind="labels")
    out[...] = labels
    return {"instances_before": before, "instances": int(labels.max()) if labels.size else 0}
