"""Task predict: run the network over a volume, in this process (``ppp_dist.learning.predict``).

With ``[vote] blockwise`` and label in the same command, predict runs on the dask workers instead, inside
the blockwise pipeline (``label.run_from_raw``).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from ppp_dist.errors import StorageError
from ppp_dist.experiment import PREDICTION
from ppp_dist.tasks.base import TaskContext, TaskResult

if TYPE_CHECKING:
    from ppp_dist.tasks.preflight import Preflight

NAME = "predict"
SUMMARY = "run the network over a volume: fg/numinst and patches (or codes)"
UPSTREAM: tuple[str, ...] = ()


def preflight(check: Preflight) -> None:
    config = check.config
    spec = check.explicit_input or config.data.input
    if check.predicts_here():
        check.device("prediction", config.prediction.device)
    channels = check.raw(spec)
    check.checkpoint(NAME, channels)
    check.output(PREDICTION, "the prediction")
    if check.exp_dir is None or config.general.overwrite or not (check.exp_dir / PREDICTION).is_dir():
        return
    from ppp_dist.io import volumes

    old_group = check.exp_dir / PREDICTION
    for name in volumes.list_arrays(old_group):
        old = volumes.open_array(f"{old_group}/{name}")
        if tuple(old.shape[-3:]) != check.spatial:
            raise StorageError(f"{old_group}/{name} holds the prediction of a volume of shape "
                               f"{tuple(old.shape[-3:])}, not of {spec} {check.spatial}; pass --set "
                               "general.overwrite=true to replace it, or start a new experiment with --root")
        if name == "patches" and config.model.head == "patches" and str(old.dtype) != config.prediction.patch_dtype:
            raise StorageError(f"{old_group}/patches holds {old.dtype} patches, not [prediction] patch_dtype = "
                               f"{config.prediction.patch_dtype}; pass --set general.overwrite=true to replace them, "
                               "or start a new experiment with --root")


def run(ctx: TaskContext) -> TaskResult:
    from ppp_dist.pipeline.predict import predict_volume

    source = ctx.explicit_input or ctx.config.data.input
    output = ctx.experiment.output(PREDICTION)
    summary = predict_volume(ctx.config, ctx.checkpoint(), source, output)
    print(f"predict: {source} -> {output} ({summary.get('seconds', 0):.1f} s)")
    return TaskResult(outputs={"prediction": str(output)}, summary=summary)
