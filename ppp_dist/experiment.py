"""Experiment folders: one run writes one folder (config, logs, outputs) that the same command resumes.

``--root DIR`` creates ``DIR/<name>_<yymmdd_HHMMSS>``; ``--exp DIR`` resumes an existing folder and, without
``--config``, reads the config saved in it.
"""

from __future__ import annotations

import datetime as _dt
import logging
from dataclasses import dataclass
from pathlib import Path

from ppp_dist.config import PipelineConfig, load_config, save_config
from ppp_dist.errors import ConfigError, StorageError

logger = logging.getLogger(__name__)

CONFIG_NAME = "config.toml"


@dataclass(frozen=True)
class Experiment:
    """An experiment folder and its resolved config."""

    path: Path
    config: PipelineConfig

    @property
    def config_path(self) -> Path:
        return self.path / CONFIG_NAME

    @property
    def log_path(self) -> Path:
        return self.path / "logs" / "run.log"

    def output(self, name: str) -> Path:
        """Path of an output inside the experiment folder (not created)."""
        return self.path / name


def _writable_folder(path: Path, what: str) -> None:
    try:
        path.mkdir(parents=True, exist_ok=True)
        probe = path / ".ppp_dist_write_probe"
        probe.write_text("")
        probe.unlink()
    except OSError as err:
        raise StorageError(f"{what} {path} cannot be written ({err.strerror}); choose a writable folder") from err


def open_experiment(*, root: Path | str | None, exp: Path | str | None, configs: list[Path],
                    overrides: list[str], name: str = "ppp") -> Experiment:
    """Create (``root``) or resume (``exp``) an experiment folder and save the resolved config in it.

    With neither, a new folder under ``./experiments`` is created.
    """
    if root is not None and exp is not None:
        raise ConfigError("give either --root (start a new experiment) or --exp (resume one), not both")
    if exp is not None:
        path = Path(exp)
        if not path.is_dir():
            raise ConfigError(f"experiment folder {path} does not exist; use --root to start a new one")
        saved = path / CONFIG_NAME
        if not configs and saved.is_file():
            configs = [saved]
        elif not configs:
            raise ConfigError(f"experiment folder {path} has no {CONFIG_NAME}; pass --config FILE")
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
    if saved.is_file() and load_config([saved]) != config:
        backup = path / "backups" / f"config_{_dt.datetime.now().strftime('%y%m%d_%H%M%S_%f')}.toml"
        backup.parent.mkdir(exist_ok=True)
        saved.replace(backup)
        logger.info("config changed; the previous one is kept as %s", backup)
    save_config(config, saved)
    logger.debug("experiment folder: %s", path)
    return Experiment(path=path, config=config)
