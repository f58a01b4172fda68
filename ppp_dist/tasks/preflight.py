"""Preflight: every check of a task chain that can be made before anything is written.

``ppp-dist`` commands run it before they create or change an experiment folder (``chain.run_tasks``): each
task's ``preflight(check)`` with the checks below, which follow the volumes through the chain:
config, inputs and their shapes, NaNs in floating-point inputs, checkpoints, output locations, the graph
database and the scheduler, so a mistake ends in one sentence with exit code 2 and leaves no experiment
folder, no partial array and no changed output behind (``tests/bad_input/test_bad_input_sweep.py``,
``docs/errors.md``).
"""

from __future__ import annotations

import math
import os
from collections.abc import Callable
from pathlib import Path

import numpy as np

from ppp_dist import limits, tasks
from ppp_dist.config import PipelineConfig
from ppp_dist.errors import CheckpointError, ConfigError, DatabaseError, InputDataError, StorageError
from ppp_dist.experiment import PREDICTION, ExperimentPaths, experiment_id
from ppp_dist.lock import check_database_free

RAW_LIMIT = 1e20  # |raw| above this with normalization "none" overflows float32 activations (max 3.4e38)
PREDICTION_SCAN_LIMIT = 2 ** 34  # float predictions above 16 GiB are not scanned before the run: the blocks check
_NAN_IN_PREDICTION = ("predict it again (check the raw volume for NaN) or replace the values; label cannot vote "
                      "with them")


class Preflight:
    """Every check that can be made before anything is written: inputs, shapes, checkpoints, outputs,
    database and scheduler of a task chain. ``run`` raises the first problem as a PppDistError (one sentence,
    exit code 2) and writes nothing, so a mistake never leaves a half-made experiment folder behind.

    It follows the volumes through the chain: ``spatial`` is the (Z, Y, X) shape the chain works on, taken
    from the first input, so that e.g. the ground truth of evaluate is checked against the raw volume of
    predict before predict runs. Apart from metadata, only floating-point inputs are read, once, chunk by
    chunk, for NaN and inf (integer volumes, the usual raw, and the default uint8 predictions cannot hold them);
    checkpoints are loaded last, after every cheaper check passed.
    """

    def __init__(self, order: tuple[str, ...], config: PipelineConfig, explicit_input: str | None,
                 exp_dir: Path | None) -> None:
        self.order, self.config, self.explicit_input, self.exp_dir = order, config, explicit_input, exp_dir
        self.spatial: tuple[int, ...] | None = None
        self.spatial_from = ""
        self.later: list[Callable[[], None]] = []  # the slow checks (loading checkpoints), after all others
        self.paths = ExperimentPaths(exp_dir) if exp_dir is not None else None

    def run(self) -> None:
        self.required()
        for task in self.order:
            tasks.TASKS[task].preflight(self)
        for check in self.later:
            check()

    def found_checkpoints(self) -> dict[int, Path]:
        """The checkpoints of the experiment being resumed (none for a new one)."""
        return self.paths.checkpoints() if self.paths is not None else {}

    # -- what every chain needs

    def required(self) -> None:
        config, first = self.config, self.order[0]
        for task, key in (("train", "train_data"), ("validate", "val_data")):
            if task in self.order and not getattr(config.data, key):
                raise ConfigError(f"{task} needs samples: set [data] {key} to zarr groups or folders of them")
        if "cross_validate" in self.order and not all(getattr(config.data, k) for k in config.data.cross_val_folds):
            raise ConfigError("cross_validate needs both folds: set [data] "
                              + " and ".join(config.data.cross_val_folds))
        needs = getattr(tasks.TASKS[first], "INPUT", "")
        if needs and not (self.explicit_input or config.data.input or self.exp_dir is not None):
            raise ConfigError(f"{first} needs {needs}: pass --input PATH.zarr[/KEY], or --exp an "
                              "experiment that holds it")
        if "predict" in self.order and not (self.explicit_input or config.data.input):
            raise ConfigError("predict needs a raw volume: pass --input PATH.zarr/KEY or set [data] input")
        if "evaluate" in self.order and not config.data.ground_truth:
            raise ConfigError("evaluate needs the ground truth: pass --gt GT.zarr/KEY or set [data] ground_truth")

    def input_of(self, task: str, produced: str) -> str | None:
        """The input ``TaskContext.upstream`` will give ``task``; None when a task of this chain makes it."""
        module = tasks.TASKS[task]
        if any(t in self.order for t in module.UPSTREAM):
            return None
        if self.explicit_input:
            return self.explicit_input
        if self.exp_dir is not None and (self.exp_dir / produced).exists():
            return str(self.exp_dir / produced)
        if self.config.data.input:
            return self.config.data.input
        where = f"{self.exp_dir} holds none" if self.exp_dir is not None else "nothing was given"
        raise ConfigError(f"{task} needs {getattr(module, 'INPUT', '')} ({where}): pass --input PATH.zarr[/KEY], "
                          "or run the upstream task in the same command")

    def same_space(self, spatial: tuple[int, ...], what: str) -> None:
        spatial = tuple(int(s) for s in spatial)
        blockwise = self.config.vote.blockwise and "label" in self.order  # cut into vote blocks
        limits.check_volume(spatial, what, self.config.vote.block_shape if blockwise else None)  # crafted shapes
        if self.spatial is not None and spatial != self.spatial:
            raise InputDataError(f"{what} has spatial shape {spatial} but {self.spatial_from} has {self.spatial}; "
                                 "they must cover the same voxels")
        if self.spatial is None:
            self.spatial, self.spatial_from = spatial, what

    def output(self, name: str, what: str) -> None:
        """StorageError if ``what`` cannot be written to ``<experiment>/name`` (checked when resuming)."""
        if self.exp_dir is None:
            return
        path = self.exp_dir / name
        if path.exists() and not path.is_dir():
            raise StorageError(f"cannot write {what} {path}: a file of that name is in the way; move it away or "
                               "start a new experiment with --root")
        probe = path if path.exists() else self.exp_dir
        if not os.access(probe, os.W_OK | os.X_OK):
            raise StorageError(f"cannot write {what} {path}: {probe} is read-only; fix its permissions or start "
                               "a new experiment with --root")
        if path.suffix == ".zarr" and path.is_dir():
            from ppp_dist.io import volumes

            volumes.list_arrays(path)  # damaged (e.g. truncated) metadata of an earlier run: refused now

    # -- inputs

    def samples(self, key: str) -> None:
        """Each sample of ``[data] key``: raw and ground truth present, matching, non-empty, finite."""
        from ppp_dist.io import volumes
        from ppp_dist.learning.sampling import list_sample_paths

        data = self.config.data
        for path in list_sample_paths(getattr(data, key), key):
            raw_spec, gt_spec = f"{path}/{data.raw_key}", f"{path}/{data.gt_key}"
            raw, gt = volumes.open_array(raw_spec), volumes.open_array(gt_spec)
            if raw.ndim not in (3, 4) or gt.ndim not in (3, 4):
                raise InputDataError(f"{raw_spec} and {gt_spec} must be (C, Z, Y, X) or (Z, Y, X) arrays; got "
                                     f"shapes {raw.shape} and {gt.shape}")
            volumes.check_not_empty(raw, raw_spec)
            if tuple(gt.shape[-3:]) != tuple(raw.shape[-3:]):
                raise InputDataError(f"{gt_spec} has spatial shape {tuple(gt.shape[-3:])} but the raw {raw_spec} "
                                     f"has {tuple(raw.shape[-3:])}; they must cover the same voxels")
            channels = 1 if raw.ndim == 3 else int(raw.shape[0])
            if channels != data.num_channels:
                raise InputDataError(f"{raw_spec} has {channels} channels but [data] num_channels = "
                                     f"{data.num_channels}; set num_channels or give the right samples")
            if gt.dtype.kind not in "ui":
                raise InputDataError(f"{gt_spec} must hold integer instance ids, got dtype {gt.dtype}")
            volumes.check_ids(gt, gt_spec)
            volumes.check_finite(raw, raw_spec, f"replace them (e.g. with 0) before {key.split('_')[0]}ing")
            if key == "train_data":  # a nearly constant normalised input learns nothing (a strided subsample)
                from ppp_dist.learning.normalize import check_spread, fit

                check_spread(raw, fit(raw, data, raw_spec), data, f"training sample {raw_spec}")

    def raw(self, spec: str) -> int:
        """The raw volume of predict (a zarr array, or a TIFF/PNG image to convert); returns its channel count."""
        from ppp_dist.io import volumes
        from ppp_dist.tasks.image_input import is_image, read_for_check

        arr = read_for_check(spec) if is_image(spec) else volumes.open_array(spec)
        if arr.ndim not in (3, 4):
            raise InputDataError(f"{spec} has {arr.ndim} dimensions with shape {arr.shape}; predict needs a "
                                 "(C, Z, Y, X) or (Z, Y, X) raw volume")
        channels = 1 if arr.ndim == 3 else int(arr.shape[0])
        if channels != self.config.data.num_channels:
            raise InputDataError(f"{spec} has {channels} channels but [data] num_channels = "
                                 f"{self.config.data.num_channels}; set num_channels or give the right volume")
        volumes.check_real(arr, spec)
        volumes.check_not_empty(arr, spec)
        self.same_space(arr.shape[-3:], f"the raw volume {spec}")
        hint = "replace them (e.g. with 0) before predict: the network turns them into NaN predictions"
        unscaled = self.config.data.normalization == "none"  # values reach the float32 network as they are
        bounds = (-RAW_LIMIT, RAW_LIMIT) if unscaled else None
        bounds_hint = ("with [data] normalization = 'none' values this large overflow the network (float32) into "
                       "NaN; set normalization to clip or minmax, or rescale the raw")
        if isinstance(arr, np.ndarray):  # an image file (TIFF/PNG), read whole for this check
            if arr.dtype.kind == "f" and not np.isfinite(arr).all():
                raise InputDataError(f"{spec} holds NaN or infinite values; {hint}")
            if bounds and arr.dtype.kind == "f" and arr.size and float(np.abs(arr).max()) > RAW_LIMIT:
                raise InputDataError(f"{spec} holds values beyond {RAW_LIMIT:g}; {bounds_hint}")
        else:
            volumes.check_finite(arr, spec, hint, bounds=bounds, bounds_hint=bounds_hint)
        return channels

    def prediction_group(self, group: str, task: str) -> None:
        """A prediction group (patches + numinst/fg) that label or visualize reads."""
        from ppp_dist.io import volumes
        from ppp_dist.pipeline.settings import check_prediction, prediction_arrays

        group = group.rstrip("/")
        volumes.open_group(group)
        store, key = volumes.parse_array_path(group)
        names = [n[len(key) + 1:] if key else n for n in volumes.list_arrays(store)
                 if not key or n.startswith(key + "/")]
        if "patches" not in names and "codes" in names:
            raise InputDataError(f"{group} holds codes but no patches; run decode first (ppp-dist decode), then {task}")
        if "patches" not in names:
            held = ", ".join(names) or "no arrays"
            raise InputDataError(f"{group} is not a prediction group: it holds {held} but no patches; give the group "
                                 f"predict wrote (e.g. EXPERIMENT/{PREDICTION})")
        patches_path, numinst_path = prediction_arrays(group)
        patches, numinst = volumes.open_array(patches_path), volumes.open_array(numinst_path)
        spatial = check_prediction(patches, numinst, self.config.model.patch_shape, group)
        volumes.check_not_empty(patches, patches_path)
        self.same_space(spatial, f"the prediction {group}")
        for arr, path in ((patches, patches_path), (numinst, numinst_path)):
            volumes.check_finite(arr, path, _NAN_IN_PREDICTION, limit_bytes=PREDICTION_SCAN_LIMIT, bounds=(0.0, 1.0),
                                 bounds_hint="float predictions are probabilities in [0, 1] (the sigmoid/softmax "
                                             "outputs predict writes); rescale them or store uint8 = value x 255")
        if not self.config.vote.blockwise:  # the whole prediction in memory: as read + float32 + labels
            voxels = math.prod(spatial)
            need = voxels * (patches.shape[0] * (patches.dtype.itemsize + 4) + 64)
            limits.check_memory(need, f"label with [vote] blockwise = false on {group}",
                                "set [vote] blockwise = true (the default), which works block by block")

    def labels(self, spec: str) -> tuple[int, ...]:
        """A label array as evaluate reads it (``evaluate._Labels``); returns its (Z, Y, X) shape."""
        from ppp_dist.io import volumes

        arr = volumes.open_array(spec)
        if arr.dtype.kind not in "uib":
            raise InputDataError(f"{spec}: labels must have an integer dtype, got {arr.dtype}")
        n_spatial = volumes.spatial_ndim(arr)
        if n_spatial not in (2, 3) or arr.ndim - n_spatial not in (0, 1):
            raise InputDataError(f"{spec}: labels must be (Y, X), (Z, Y, X) or (K, Z, Y, X) (or a 2D stack (K, Y, X) "
                                 f"with OME axes); got shape {arr.shape}")
        volumes.check_not_empty(arr, spec)
        volumes.check_ids(arr, spec)
        spatial = tuple(int(s) for s in arr.shape[arr.ndim - n_spatial:])
        return (1, *spatial) if n_spatial == 2 else spatial

    def checkpoint(self, task: str, channels: int) -> None:
        """The checkpoint predict/decode will load: there, readable, of the network [model] describes."""
        if "train" in self.order:
            return
        which = self.config.prediction.checkpoint
        explicit = isinstance(which, str) and which not in ("last", "best")
        if self.exp_dir is None and not explicit:
            raise CheckpointError(f"{task} needs a trained network but a new experiment (--root) has no "
                                  "checkpoints; add train to the tasks, resume an experiment that has them (--exp "
                                  "DIR), or set prediction.checkpoint to a checkpoint file")
        train_dir = ExperimentPaths(Path(self.exp_dir or ".")).train_dir
        if explicit and not Path(str(which)).is_file():
            raise CheckpointError(f"checkpoint {which} does not exist; give 'last', an iteration number or a file")
        found = self.found_checkpoints()
        if not explicit and not found:
            raise CheckpointError(f"{task} needs a trained network but {train_dir} holds no "
                                  "checkpoint_<iteration>.pt; train first or set prediction.checkpoint to a file")
        if isinstance(which, int) and which not in found:
            raise CheckpointError(f"no checkpoint for iteration {which} in {train_dir} (found "
                                  f"{', '.join(map(str, sorted(found)))}); set prediction.checkpoint to one of them or "
                                  "'last'")

        def check() -> None:
            if which == "best" and "validate" in self.order:
                return  # validate chooses it
            self.load_checkpoint(ExperimentPaths(Path(self.exp_dir or ".")).checkpoint(which), channels)
        self.later.append(check)

    def load_checkpoint(self, path: Path | str, channels: int) -> None:
        from ppp_dist.learning.model import architecture, check_compatible, check_weights, read_checkpoint

        try:
            state = read_checkpoint(path)
        except CheckpointError as err:
            if err.__cause__ is None:  # torch read it, but it is not ppp_dist's
                raise CheckpointError(f"{err}; give a checkpoint_<iteration>.pt written by ppp-dist train") from err
            cause: BaseException = err
        except Exception as err:  # torch's unpickler raises anything (IndexError, KeyError, ...) on other files
            cause = err
        else:
            check_compatible(state, architecture(self.config.model, channels), path)
            check_weights(state, path)
            return
        raise CheckpointError(f"cannot read checkpoint {path}: torch cannot load it (not a checkpoint, or a damaged "
                              "one); give a checkpoint_<iteration>.pt written by ppp-dist train") from cause


    def metric(self) -> None:
        from ppp_dist.config.checks import metric_problem

        problem = metric_problem(self.config)
        if problem:
            raise ConfigError(problem)

    def device(self, section: str, device: str) -> None:
        """ConfigError if ``device`` (cuda or cuda:N) is not on this machine (checked where the task runs here)."""
        if not device.startswith("cuda"):
            return
        import torch

        count = torch.cuda.device_count() if torch.cuda.is_available() else 0
        index = int(device.partition(":")[2] or 0)
        if index >= count:
            have = f"cuda:0 to cuda:{count - 1}" if count else "none"
            raise ConfigError(f"[{section}] device = {device!r} but this machine has {count} CUDA device(s) ({have}); "
                              "use 'auto', 'cpu' or a device that exists")

    def predicts_here(self) -> bool:
        """Whether the network runs in this process or on this machine's workers (not on a remote cluster)."""
        blockwise = self.config.vote.blockwise and "label" in self.order
        return not blockwise or self.config.cluster.kind in ("local", "cuda")

    def checkpoints(self, task: str) -> None:
        if "train" in self.order:
            return
        if self.exp_dir is None:
            raise ConfigError(f"{task} needs checkpoints but a new experiment (--root) has none; add train to the "
                              "tasks or resume an experiment that has them (--exp DIR)")
        from ppp_dist.tasks.validate import sweep_checkpoints

        sweep_checkpoints(self.config, ExperimentPaths(self.exp_dir), task)

    def database(self) -> None:
        """The graph database of blockwise label: reachable, ppp_dist's schema, not another run's."""
        from ppp_dist.io.database import OWNER_ID, OWNER_PATH, foreign_owner_message, inspect_database

        db = self.config.database
        if db.backend == "sqlite" and not db.path and self.exp_dir is None:
            return  # a new graph.sqlite inside the new experiment folder
        where, meta = inspect_database(db, self.exp_dir)
        owner = meta.get(OWNER_ID)
        mine = experiment_id(self.exp_dir, create=False) if self.exp_dir is not None else ""
        if owner and owner != mine:
            raise DatabaseError(foreign_owner_message(where, meta.get(OWNER_PATH, "?")))
        if self.exp_dir is not None or db.path:
            check_database_free(db, self.exp_dir)  # another run of this experiment holds its database

