"""Logging set-up. Only entry points (the CLI, worker start-up) call :func:`setup_logging`."""

from __future__ import annotations

import logging
import sys
from pathlib import Path

from ppp_dist.redact import redact

_FORMAT = "%(asctime)s %(levelname)-7s %(name)s: %(message)s"


class RedactingFormatter(logging.Formatter):
    """A formatter that hides DSN passwords (``ppp_dist.redact``) in the whole formatted record, traceback
    included: no log line of ppp_dist, at any level, in any file, holds one."""

    def format(self, record: logging.LogRecord) -> str:
        return redact(super().format(record))


class _CurrentStderr(logging.StreamHandler):
    """A console handler that writes to whatever ``sys.stderr`` is at the time of the record (a stream
    captured and then closed by a caller, e.g. a test runner, is never written to after it is gone)."""

    def __init__(self) -> None:
        super().__init__(sys.stderr)

    @property
    def stream(self):  # noqa: D401
        return sys.stderr

    @stream.setter
    def stream(self, value) -> None:
        pass


class LogFile(logging.FileHandler):
    """A log file that stops writing, silently, when it cannot (a full disk, a removed folder): the logging
    module would otherwise print a traceback on stderr for every record, while the command reports the full
    disk in its own one sentence."""

    failed = False

    def handleError(self, record: logging.LogRecord) -> None:  # noqa: N802 (logging's name)
        self.failed = True

    def emit(self, record: logging.LogRecord) -> None:
        if not self.failed:
            super().emit(record)


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
    console.setFormatter(RedactingFormatter("%(levelname)s %(message)s"))
    root.addHandler(console)
    if logfile is not None:
        path = Path(logfile)
        path.parent.mkdir(parents=True, exist_ok=True)
        handler = LogFile(path)
        handler.setLevel(logging.DEBUG)
        handler.setFormatter(RedactingFormatter(_FORMAT))
        root.addHandler(handler)
    root.propagate = False
