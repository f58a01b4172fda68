"""Logging set-up. Only entry points (the CLI, worker start-up) call :func:`setup_logging`."""

from __future__ import annotations

import logging
import sys
from pathlib import Path

_FORMAT = "%(asctime)s %(levelname)-7s %(name)s: %(message)s"


class _CurrentStderr(logging.StreamHandler):
    """A console handler that writes to whatever ``sys.stderr`` is at the time of the record (a stream
    captured and then closed by a caller, e.g. a test runner, is never written to after it is gone)."""

    def __init__(self) -> None:
        super().__init__(sys.stderr)

    @property  # type: ignore[override]
    def stream(self):  # noqa: D401
        return sys.stderr

    @stream.setter
    def stream(self, value) -> None:
        pass


def setup_logging(level: str | int = "INFO", logfile: Path | str | None = None) -> None:
    """Log to stderr at ``level`` and, if given, to ``logfile`` at DEBUG.

    Parameters
    ----------
    level : a logging level name ("DEBUG", "INFO", ...) or number, for the console.
    logfile : optional path; its folder is created.
    """
    root = logging.getLogger("ppp_dist")
    root.setLevel(logging.DEBUG)
    for handler in list(root.handlers):
        root.removeHandler(handler)
        handler.close()
    console = _CurrentStderr()
    console.setLevel(level if isinstance(level, int) else getattr(logging, str(level).upper()))
    console.setFormatter(logging.Formatter("%(levelname)s %(message)s"))
    root.addHandler(console)
    if logfile is not None:
        path = Path(logfile)
        path.parent.mkdir(parents=True, exist_ok=True)
        handler = logging.FileHandler(path)
        handler.setLevel(logging.DEBUG)
        handler.setFormatter(logging.Formatter(_FORMAT))
        root.addHandler(handler)
    root.propagate = False
