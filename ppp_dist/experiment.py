"""Experiment folders: one run writes one folder (config, logs, outputs) that the same command resumes.

``--root DIR`` creates ``DIR/<name>_<yymmdd_HHMMSS>``; ``--exp DIR`` resumes an existing folder and, without
``--config``, reads the config saved in it.

The saved ``config.toml`` never holds a password: a ``[database] dsn`` with one is saved without it, and the
whole DSN goes to ``secrets.toml`` beside it, readable by its owner only (mode 0600), which resuming and
``status`` read too. ``config.toml`` can be shown, copied and shared; ``secrets.toml`` cannot.
"""

from __future__ import annotations

import datetime as _dt
import json
import logging
import os
import re
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import tomli_w

from ppp_dist.config import PipelineConfig, load_config, save_config
from ppp_dist.config.loader import public_config
from ppp_dist.errors import CheckpointError, ConfigError, StorageError

logger = logging.getLogger(__name__)

CONFIG_NAME = "config.toml"
# every name inside an experiment folder: spelled here only (ppp_dist.tasks: how tasks pass outputs on)
TRAIN = "train"  # checkpoint_<iteration>.pt, metrics.csv
VAL = "val"  # validate: results.json, best.json
CV = "cv"  # cross_validate
PREDICTION = "prediction.zarr"
INSTANCES = "instances.zarr"
POSTPROCESSED = "postprocessed.zarr"
INSTANCES_KEY = "instances"  # the label array inside INSTANCES and POSTPROCESSED
EVALUATION = "evaluation"
VISUALIZE = "visualize"
LOGS = "logs"  # run.log; jobs/ (batch-system worker jobs); failed-block reports
WORK = "pipeline"  # the blockwise stages' work files (stage parameters, vote artifacts)
GRAPH_DB = "graph.sqlite"  # the default SQLite graph database
ID_NAME = "experiment_id"  # a random id written once; the run database records it (one database, one run)
SECRETS_NAME = "secrets.toml"  # the DSN with its password (mode 0600), apart from config.toml
_ID = re.compile(r"^[A-Za-z0-9_.-]{1,128}$")
CHECKPOINT_PATTERN = re.compile(r"^checkpoint_(\d+)\.pt$")


@dataclass(frozen=True)
class ExperimentPaths:
    """Every path inside an experiment folder, and the checkpoint lookup; usable before the folder exists
    (preflight) and without torch."""

    path: Path

    @property
    def config_path(self) -> Path:
        return self.path / CONFIG_NAME

    @property
    def log_path(self) -> Path:
        return self.path / LOGS / "run.log"

    @property
    def logs(self) -> Path:
        return self.path / LOGS

    @property
    def jobs_logs(self) -> Path:
        """Where batch-system worker jobs write their output (next to the driver's run.log)."""
        return self.path / LOGS / "jobs"

    @property
    def work(self) -> Path:
        return self.path / WORK

    @property
    def train_dir(self) -> Path:
        return self.path / TRAIN

    @property
    def train_metrics(self) -> Path:
        """One row per ``log_every`` training iterations (train.py)."""
        return self.path / TRAIN / "metrics.csv"

    @property
    def train_network(self) -> Path:
        """The architecture and measured input/output shapes of the trained network."""
        return self.path / TRAIN / "network.json"

    @property
    def tensorboard(self) -> Path:
        return self.path / TRAIN / "tensorboard"

    @property
    def best_file(self) -> Path:
        """The (checkpoint, parameters) validate chose."""
        return self.path / VAL / "best.json"

    @property
    def val_results(self) -> Path:
        return self.path / VAL / "results.json"

    @property
    def cv_results(self) -> Path:
        return self.path / CV / "cross_validate.json"

    def output(self, name: str) -> Path:
        """Path of an output inside the experiment folder (not created)."""
        return self.path / name

    def checkpoint_file(self, iteration: int) -> Path:
        return self.train_dir / f"checkpoint_{int(iteration)}.pt"

    def checkpoints(self) -> dict[int, Path]:
        """``{iteration: path}`` of every ``checkpoint_<iteration>.pt`` in the train folder, ascending."""
        if not self.train_dir.is_dir():
            return {}
        found = {int(m.group(1)): p for p in self.train_dir.iterdir() if (m := CHECKPOINT_PATTERN.match(p.name))}
        return dict(sorted(found.items()))

    def best(self) -> dict[str, Any] | None:
        """The best (checkpoint, params) of an earlier validate run, or None."""
        if not self.best_file.is_file():
            return None
        best = json.loads(self.best_file.read_text())
        best["params"] = {k: tuple(v) if isinstance(v, list) else v for k, v in best["params"].items()}
        return best

    def checkpoint(self, which: int | str = "last") -> Path:
        """The checkpoint file for ``[prediction] checkpoint``: "last", "best" (validate's choice), an
        iteration, or a file path."""
        if isinstance(which, str) and which not in ("last", "best"):
            path = Path(which)
            if not path.is_file():
                raise CheckpointError(f"checkpoint {path} does not exist; give 'last', an iteration number or a file")
            return path
        found = self.checkpoints()
        if not found:
            raise CheckpointError(f"no checkpoint_<iteration>.pt in {self.train_dir}; train first")
        if which == "last":
            return found[max(found)]
        if which == "best":
            best = self.best()
            if best is None:
                raise CheckpointError(f"prediction.checkpoint = 'best' needs a validation run in {self.path} "
                                      "(ppp-dist validate); give 'last' or an iteration number")
            which = int(best["checkpoint"])
        if int(which) in found:
            return found[int(which)]
        raise CheckpointError(f"no checkpoint for iteration {which} in {self.train_dir}; found {sorted(found)}")


@dataclass(frozen=True)
class Experiment(ExperimentPaths):
    """An experiment folder and its resolved config."""

    config: PipelineConfig

    @property
    def id(self) -> str:
        """The experiment's id (see :func:`experiment_id`)."""
        return experiment_id(self.path)


def experiment_id(path: Path | str, *, create: bool = True) -> str:
    """The random id of the experiment folder ``path``, written on first use; "" if absent and not ``create``.

    The id stays with the folder when it is moved or copied, so the run database (which records it) keeps
    belonging to the same run.
    """
    file = Path(path) / ID_NAME
    if file.is_file():
        try:
            text = file.read_bytes().decode("utf-8").strip()
        except UnicodeDecodeError as err:
            raise ConfigError(f"{file} is not UTF-8 text (byte {err.object[err.start]:#04x} at offset {err.start}): "
                              "not ppp_dist's; remove it (a new id is written) or restore it from a copy") from err
        except OSError as err:
            raise StorageError(f"{file} cannot be read ({err.strerror}); fix its permissions") from err
        if text and not _ID.match(text):
            raise ConfigError(f"{file} holds {text[:40]!r}, not an experiment id (letters, digits, _.-): not "
                              "ppp_dist's; remove it (a new id is written) or restore it from a copy")
        if text:
            return text
    if not create:
        return ""
    text = uuid.uuid4().hex
    file.write_text(text + "\n")
    return text


def _writable_folder(path: Path, what: str) -> None:
    try:
        path.mkdir(parents=True, exist_ok=True)
        probe = path / ".ppp_dist_write_probe"
        probe.write_text("")
        probe.unlink()
    except OSError as err:
        raise StorageError(f"{what} {path} cannot be written ({err.strerror}); choose a writable folder") from err


def experiment_configs(exp: Path | str, configs: list[Path] | list[str]) -> list[Path]:
    """The config files that resume ``exp``: ``configs`` if given, else its saved config; ConfigError if
    the folder does not exist or has neither."""
    path = Path(exp)
    if not path.is_dir():
        what = "is a file, not a folder" if path.exists() else "does not exist"
        raise ConfigError(f"experiment folder {path} {what}; use --root to start a new one")
    saved = path / CONFIG_NAME
    if configs:
        return [Path(c) for c in configs]
    if not saved.is_file():
        raise ConfigError(f"experiment folder {path} has no {CONFIG_NAME}; pass --config FILE")
    secrets = path / SECRETS_NAME
    return [saved, secrets] if secrets.is_file() else [saved]


def _save_secrets(path: Path, config: PipelineConfig) -> None:
    """``secrets.toml`` (mode 0600) with the DSN when it has a password that ``config.toml`` leaves out."""
    file = path / SECRETS_NAME
    if public_config(config) == config:
        file.unlink(missing_ok=True)
        return
    text = ("# The database DSN of this experiment with its password (config.toml keeps it without); readable by "
            "its owner only. Never share this file.\n" + tomli_w.dumps({"database": {"dsn": config.database.dsn}}))
    fd = os.open(file, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    os.fchmod(fd, 0o600)
    with os.fdopen(fd, "w", encoding="utf-8") as f:
        f.write(text)


def _writable_folder_check(path: Path, what: str) -> None:
    """StorageError if ``path`` (or, when missing, the nearest existing folder above it) cannot be written;
    creates nothing."""
    probe = path
    while not probe.exists() and probe != probe.parent:
        probe = probe.parent
    if not probe.is_dir():
        raise StorageError(f"{what} {path} cannot be written ({probe} is a file, not a folder); choose a writable "
                           "folder")
    if not os.access(probe, os.W_OK | os.X_OK):
        raise StorageError(f"{what} {path} cannot be written ({probe} is read-only); choose a writable folder")


def check_experiment_location(*, root: Path | str | None, exp: Path | str | None) -> None:
    """Before anything is written: ConfigError/StorageError if the experiment folder could not be opened."""
    if root is not None and exp is not None:
        raise ConfigError("give either --root (start a new experiment) or --exp (resume one), not both")
    if exp is not None:
        experiment_configs(exp, [Path("-")])  # existence only; the configs are checked by load_config
        experiment_id(exp, create=False)  # a damaged id file is reported now, not after the config is saved
        _writable_folder_check(Path(exp), "experiment folder")
    else:
        _writable_folder_check(Path(root if root is not None else "experiments"), "experiment folder")


def open_experiment(*, root: Path | str | None, exp: Path | str | None, configs: list[Path],
                    overrides: list[str], name: str = "ppp") -> Experiment:
    """Create (``root``) or resume (``exp``) an experiment folder and save the resolved config in it.

    With neither, a new folder under ``./experiments`` is created.
    """
    if root is not None and exp is not None:
        raise ConfigError("give either --root (start a new experiment) or --exp (resume one), not both")
    if exp is not None:
        path = Path(exp)
        configs = experiment_configs(path, configs)
    else:
        stamp = _dt.datetime.now().strftime("%y%m%d_%H%M%S")
        path = Path(root if root is not None else "experiments") / f"{name}_{stamp}"
        suffix = 1
        while path.exists():
            path = path.with_name(f"{name}_{stamp}_{suffix}")
            suffix += 1
    config = load_config(configs, overrides)  # fails before anything is written
    _writable_folder(path, "experiment folder")
    saved = path / CONFIG_NAME
    if saved.is_file() and load_config([saved]) != public_config(config):
        backup = path / "backups" / f"config_{_dt.datetime.now().strftime('%y%m%d_%H%M%S_%f')}.toml"
        backup.parent.mkdir(exist_ok=True)
        saved.replace(backup)
        logger.info("config changed; the previous one is kept as %s", backup)
    save_config(config, saved)  # without the DSN's password
    _save_secrets(path, config)
    experiment_id(path)
    logger.debug("experiment folder: %s", path)
    return Experiment(path=path, config=config)
