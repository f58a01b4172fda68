"""Console logging follows sys.stderr: a replaced and closed stream (a caller's capture) is never written."""

from __future__ import annotations

import io
import logging
import sys

from ppp_dist.logs import setup_logging


def test_console_handler_writes_to_the_current_stderr(monkeypatch, capsys):
    log = logging.getLogger("ppp_dist.test_logs")
    captured = io.StringIO()
    monkeypatch.setattr(sys, "stderr", captured)
    setup_logging("INFO")  # set up while stderr is the capture
    log.info("first")
    assert captured.getvalue() == "INFO first\n"
    monkeypatch.undo()
    captured.close()
    errors = []
    monkeypatch.setattr(logging, "raiseExceptions", True)
    monkeypatch.setattr(logging.Handler, "handleError", lambda self, record: errors.append(record))
    log.info("second")  # the capture is gone: the record goes to the stderr of now
    assert errors == []
    assert capsys.readouterr().err == "INFO second\n"
