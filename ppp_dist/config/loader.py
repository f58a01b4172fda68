"""Loading configs: defaults <- TOML files (in order) <- ``--set section.key=value``.

Every problem (unknown or misspelt key, wrong type, out-of-range value) is collected and reported in one
:class:`~ppp_dist.errors.ConfigError`, with "did you mean" suggestions for misspelt keys.
"""

from __future__ import annotations

import dataclasses
import tomllib
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import tomli_w

from ppp_dist import __version__
from ppp_dist.config.sections import GRID_POSTPROCESS_KEYS, PipelineConfig
from ppp_dist.config.typed import build
from ppp_dist.errors import ConfigError
from ppp_dist.redact import has_password, redact, without_password


def _merge(base: dict[str, Any], update: dict[str, Any]) -> dict[str, Any]:
    out = dict(base)
    for key, value in update.items():
        if isinstance(value, dict) and isinstance(out.get(key), dict):
            out[key] = _merge(out[key], value)
        else:
            out[key] = value
    return out


def read_toml(path: Path | str) -> dict[str, Any]:
    """Parse one TOML file; errors name the file and the line."""
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"config file {path} does not exist; pass an existing TOML file to --config")
    try:
        with path.open("rb") as f:
            return tomllib.load(f)
    except tomllib.TOMLDecodeError as err:
        raise ConfigError(f"config file {path} is not valid TOML: {err}") from err
    except UnicodeDecodeError as err:
        raise ConfigError(f"config file {path} is not UTF-8 text (byte {err.object[err.start]:#04x} at offset "
                          f"{err.start}); save it as UTF-8") from err
    except OSError as err:
        raise ConfigError(f"config file {path} cannot be read: {err.strerror}") from err


def parse_override(text: str) -> dict[str, Any]:
    """Turn ``section.key=value`` (value in TOML syntax; bare words are strings) into a nested table."""
    if "=" not in text:
        raise ConfigError(f"--set {text!r} must look like section.key=value, e.g. vote.patch_threshold=0.6")
    dotted, raw = text.split("=", 1)
    parts = [p.strip() for p in dotted.strip().split(".")]
    if len(parts) < 2 or not all(parts):
        raise ConfigError(f"--set {text!r} must name a section and a key, e.g. vote.patch_threshold=0.6")
    try:
        value = tomllib.loads(f"v = {raw.strip()}")["v"]
    except tomllib.TOMLDecodeError:
        value = raw.strip()  # a bare word such as greedy or cpu
    table: dict[str, Any] = {parts[-1]: value}
    for part in reversed(parts[:-1]):
        table = {part: table}
    return table


def _problems(table: dict[str, Any]) -> tuple[PipelineConfig, list[str]]:
    problems: list[str] = []
    table = {k: v for k, v in table.items() if k != "ppp_dist"}  # provenance written by save_config
    config = build(PipelineConfig, table, "", problems)
    problems += config.problems()  # values with a wrong type were left at their defaults
    return config, problems


def config_from_table(table: dict[str, Any]) -> PipelineConfig:
    """Build and validate a :class:`PipelineConfig` from one merged table; raise all problems at once."""
    config, problems = _problems(table)
    if problems:
        raise ConfigError(_join(problems))
    return config


def _join(problems: list[str]) -> str:
    if len(problems) == 1:
        return problems[0]
    return f"{len(problems)} problems in the config: " + "; ".join(problems)


def load_config(paths: Sequence[Path | str] = (), overrides: Sequence[str] = ()) -> PipelineConfig:
    """Defaults, then each TOML file in order (later files win), then ``--set`` overrides."""
    table: dict[str, Any] = {}
    sources: list[tuple[str, dict[str, Any]]] = []
    for path in paths:
        sources.append((f"config file {path}", read_toml(path)))
        table = _merge(table, sources[-1][1])
    for text in overrides:
        sources.append((f"--set {text}", parse_override(text)))
        table = _merge(table, sources[-1][1])
    config, problems = _problems(table)
    if problems:
        raise ConfigError(_join(problems) + _blame(problems, sources))
    return config


def _blame(problems: list[str], sources: list[tuple[str, dict[str, Any]]]) -> str:
    """`` (from config file X)``: the files and ``--set`` options that alone show one of ``problems``."""
    found = set(problems)
    named = [name for name, table in sources if found & set(_problems(table)[1])]
    return f" (from {' and '.join(named)})" if named else ""


def public_config(config: PipelineConfig, mask: str = "") -> PipelineConfig:
    """``config`` without secrets: the password of ``[database] dsn`` dropped (``mask`` = "") or masked."""
    dsn = config.database.dsn
    if not has_password(dsn):
        return config
    public = redact(dsn) if mask else without_password(dsn)
    return dataclasses.replace(config, database=dataclasses.replace(config.database, dsn=public))


def config_to_table(config: PipelineConfig, mask: str = "") -> dict[str, Any]:
    """The resolved config as a TOML-ready table (tuples become lists), without the DSN's password
    (see :func:`public_config`): every printed, saved or checkpointed config goes through here."""
    def plain(value: Any) -> Any:
        if isinstance(value, tuple):
            return [plain(v) for v in value]
        if isinstance(value, dict):
            return {k: plain(v) for k, v in value.items()}
        return value
    return {k: plain(v) for k, v in dataclasses.asdict(public_config(config, mask)).items()}


def save_config(config: PipelineConfig, path: Path | str) -> Path:
    """Write the resolved config (with the package version) as TOML; it loads back to an equal config, but
    for the password of ``[database] dsn``, which is never written (``ppp_dist.experiment`` keeps it apart)."""
    path = Path(path)
    table = config_to_table(config)
    table["ppp_dist"] = {"version": __version__}
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp")  # a full disk must not leave a half-written config behind
    try:
        tmp.write_text("# Resolved ppp_dist config: defaults <- files <- --set overrides.\n" + tomli_w.dumps(table))
        tmp.replace(path)
    finally:
        tmp.unlink(missing_ok=True)
    return path


def with_vote(config: PipelineConfig, params: dict[str, Any]) -> PipelineConfig:
    """``config`` with ``params`` written into ``[vote]`` (``min_instance_size`` into ``[postprocess]``),
    validated like any config."""
    post = {k: v for k, v in params.items() if k in GRID_POSTPROCESS_KEYS}
    vote = dataclasses.replace(config.vote, **{k: v for k, v in params.items() if k not in post})
    postprocess = dataclasses.replace(config.postprocess, **post)
    problems = vote.problems() + postprocess.problems()
    if problems:
        raise ConfigError("; ".join(problems))
    return dataclasses.replace(config, vote=vote, postprocess=postprocess)
