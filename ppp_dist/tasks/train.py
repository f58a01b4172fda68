"""Task train: fit the network on ``[data] train_data`` (``ppp_dist.learning.train``)."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

from ppp_dist.errors import CheckpointError
from ppp_dist.experiment import TRAIN
from ppp_dist.tasks.base import TaskContext, TaskResult

if TYPE_CHECKING:
    from ppp_dist.tasks.preflight import Preflight

NAME = "train"
SUMMARY = "fit a U-Net that predicts a patch (or a code) and numinst at every voxel"
UPSTREAM: tuple[str, ...] = ()


def preflight(check: Preflight) -> None:
    config = check.config
    check.device("training", config.training.device)
    check.samples("train_data")
    if config.data.val_data and config.training.validate_every:
        check.samples("val_data")
    check.output(TRAIN, "checkpoints into")
    init = config.training.init_checkpoint
    if init and not check.found_checkpoints():  # train starts from it (a resumed run from its last checkpoint)
        if not Path(init).is_file():
            raise CheckpointError(f"[training] init_checkpoint {init} does not exist; give a checkpoint file "
                                  "or leave it empty to start from random weights")
        check.later.append(lambda: check.load_checkpoint(init, config.data.num_channels))


def run(ctx: TaskContext) -> TaskResult:
    from ppp_dist.learning.train import run_train

    summary = run_train(ctx.config, ctx.experiment.path)
    if summary["iterations_run"] == 0:
        print(f"train: done already, {summary['iterations']} iterations "
              f"(max_iterations {ctx.config.training.max_iterations}), checkpoint {summary['checkpoint']}")
    else:
        print(f"train: {summary['iterations']} iterations ({summary['iterations_run']} now, "
              f"{summary['it_per_s']:.2f} it/s), final loss {summary['final_loss']:.4f}, "
              f"checkpoint {summary['checkpoint']}")
    return TaskResult(outputs={"checkpoint": str(summary["checkpoint"])}, summary=summary)
