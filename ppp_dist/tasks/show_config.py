"""Command show-config: print the resolved config (defaults <- files <- --set) as TOML, the DSN's password
masked."""

from __future__ import annotations

import tomli_w

from ppp_dist.config import load_config
from ppp_dist.config.loader import config_to_table
from ppp_dist.redact import MASK
from ppp_dist.tasks.base import CommandContext, TaskResult

NAME = "show-config"
SUMMARY = "print the resolved config (defaults <- files <- --set)"
UPSTREAM: tuple[str, ...] = ()


def preflight(ctx: CommandContext) -> None:
    load_config(ctx.args.config, ctx.overrides)


def run(ctx: CommandContext) -> TaskResult:
    config = load_config(ctx.args.config, ctx.overrides)
    print(tomli_w.dumps(config_to_table(config, mask=MASK)), end="")  # the DSN's password as ***
    return TaskResult()
