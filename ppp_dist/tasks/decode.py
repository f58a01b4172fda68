"""Task decode (ppp+dec): turn the predicted codes into patch probabilities (``ppp_dist.learning.decode``)."""

from __future__ import annotations

from typing import TYPE_CHECKING

from ppp_dist.errors import ConfigError, InputDataError
from ppp_dist.experiment import PREDICTION
from ppp_dist.tasks.base import TaskContext, TaskResult

if TYPE_CHECKING:
    from ppp_dist.tasks.preflight import Preflight

NAME = "decode"
SUMMARY = "ppp+dec: turn predicted codes into patch probabilities"
UPSTREAM: tuple[str, ...] = ("predict",)
INPUT = "a prediction group with codes"


def preflight(check: Preflight) -> None:
    from ppp_dist.io import volumes

    config = check.config
    if config.model.head != "codes":
        raise ConfigError("decode needs [model] head = 'codes' (ppp+dec); with head = 'patches' the prediction "
                          "holds patches already")
    group = check.input_of(NAME, PREDICTION)
    if group is not None:
        group = group.rstrip("/")
        volumes.open_group(group)
        store, key = volumes.parse_array_path(group)
        codes = f"{key}/codes" if key else "codes"
        if codes not in volumes.list_arrays(store):
            raise InputDataError(f"{group} holds no 'codes' array; decode needs the prediction of a ppp+dec "
                                 "network (run predict with [model] head = 'codes')")
        arr = volumes.open_array(f"{group}/codes")
        volumes.check_not_empty(arr, f"{group}/codes")
        check.same_space(arr.shape[-3:], f"the prediction {group}")
    check.device("prediction", config.prediction.device)
    check.checkpoint(NAME, config.data.num_channels)
    check.output(PREDICTION, "patches into")


def run(ctx: TaskContext) -> TaskResult:
    from ppp_dist.learning.decode import decode_volume

    store = ctx.upstream(NAME, UPSTREAM, ctx.experiment.output(PREDICTION), INPUT)
    summary = decode_volume(ctx.config, ctx.checkpoint(), store)
    print(f"decode: {summary['voxels_decoded']} voxels decoded into {summary['output']}")
    return TaskResult(outputs={"prediction": str(summary["output"])}, summary=summary)
