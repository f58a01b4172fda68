"""A checkpoint as the first config layer: ``ppp-dist infer --checkpoint FILE`` and ``train --init FILE``.

A checkpoint carries the resolved config it was trained with (``config_toml``). To run it on a user's images
without any config, or to fine-tune from it, the settings that belong to the network are taken from there and
put below the user's own ``--config`` files and ``--set`` values: the whole ``[model]``, the normalisation
keys and ``num_channels`` of ``[data]``, ``[vote]`` and ``[postprocess]`` (which carry the values validated
for it). Data paths, training and cluster settings are not taken.
"""

from __future__ import annotations

import tempfile
import tomllib
from pathlib import Path
from typing import Any

import tomli_w

from ppp_dist.errors import CheckpointError

DATA_KEYS = ("num_channels", "normalization", "percentile_low", "percentile_high", "fixed_offset", "fixed_scale",
             "clip_max", "shift_intensity", "raw_padding")
SECTIONS = ("model", "vote", "postprocess")


def checkpoint_table(path: str | Path) -> dict[str, Any]:
    """The network's settings from checkpoint ``path``'s saved config (see the module docstring)."""
    from ppp_dist.learning.model import read_checkpoint

    state = read_checkpoint(path)
    text = state.get("config_toml") or ""
    if not text:
        raise CheckpointError(f"checkpoint {path} carries no config; pass the config it was trained with (--config)")
    try:
        saved = tomllib.loads(text)
    except tomllib.TOMLDecodeError as err:
        raise CheckpointError(f"checkpoint {path} carries a config that does not parse ({err}); pass --config") \
            from err
    table: dict[str, Any] = {key: saved[key] for key in SECTIONS if key in saved}
    data = {key: saved.get("data", {})[key] for key in DATA_KEYS if key in saved.get("data", {})}
    if data:
        table["data"] = data
    return table


def config_layer(path: str | Path) -> Path:
    """A temporary TOML file holding :func:`checkpoint_table` of ``path`` (the first of the config files)."""
    table = checkpoint_table(path)
    handle = tempfile.NamedTemporaryFile("w", suffix=".toml", prefix="ppp_dist_checkpoint_", delete=False)
    with handle:
        handle.write(f"# the network's settings from {Path(path).name}\n" + tomli_w.dumps(table))
    return Path(handle.name)


__all__ = ["checkpoint_table", "config_layer"]
