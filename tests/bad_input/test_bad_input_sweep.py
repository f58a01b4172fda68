"""The bad-input sweep (issue #7 item 5): every entry point of the command line with the mistakes users make.

Each row of ``ROWS`` (``_sweep_table.py`` and the attacks of ``_security_table.py``; inputs, setups and checks in
``_sweep_inputs.py`` and, for damaged, crafted and hostile inputs, ``_hostile_inputs.py``) is one
documented behaviour: a command line, the setup it needs, the exit code and a distinctive part of the sentence
the user reads. ``docs/errors.md`` is this table in prose; keep them together.

A row runs ``.venv/bin/ppp-dist`` as a subprocess in a fresh folder (``cwd``, so even the default
``experiments/`` folder would be seen), or ``cli.main`` in-process where the subprocess would spend its time
importing torch or waiting (rows marked ``inproc``: checkpoints, the 10 s wait for an unreachable scheduler,
shortened to 1 s; the stderr that capsys sees is the one the user sees).

For exit code 2 a row checks: exactly one line on stderr, ``ppp-dist...: error: ...``, no traceback, and
NOTHING written: every file under the row's folder and under the shared inputs is listed and hashed before and
after (no experiment folder, no partial array, existing outputs and databases untouched). For exit code 0
(all-background volumes, volumes smaller than one block, a dry run) it checks the output and the warning; the
one exit-code-1 row (a NaN that only the blocks can find) checks the last line and the ledger.
"""

from __future__ import annotations

import hashlib
import os
import shlex
import subprocess
from pathlib import Path

import pytest
from _security_table import SECURITY_ROWS
from _sweep_inputs import EXE, make_inputs
from _sweep_table import ROWS as INPUT_ROWS
from _sweep_table import Row

from ppp_dist.cli import main

ROWS = INPUT_ROWS + SECURITY_ROWS


@pytest.fixture(scope="module")
def data(tmp_path_factory) -> Path:
    """The shared inputs of every row (read-only for the rows: the snapshot covers them too)."""
    return make_inputs(tmp_path_factory.mktemp("inputs"))


def snapshot(*roots: Path) -> dict[str, str]:
    """Every file and folder under ``roots`` with the sha256 of its bytes."""
    found = {}
    for root in roots:
        for path in sorted(root.rglob("*")):
            found[str(path)] = "folder" if path.is_dir() else hashlib.sha256(path.read_bytes()).hexdigest()
    return found


def _run(argv: list[str], cwd: Path, inproc: bool, capsys, monkeypatch) -> tuple[int, str, str]:
    if inproc:
        monkeypatch.chdir(cwd)
        capsys.readouterr()
        code = main(argv)
        out, err = capsys.readouterr()
        return code, out, err
    env = {k: v for k, v in os.environ.items() if k != "PPP_DIST_DB_DSN"}
    proc = subprocess.run([str(EXE), *argv], cwd=cwd, capture_output=True, text=True, timeout=300, env=env)
    return proc.returncode, proc.stdout, proc.stderr


@pytest.mark.parametrize("case", ROWS)
def test_bad_input(case: Row, data, tmp_path, request, capsys, monkeypatch):
    values = {"data": str(data)}
    if case.setup is not None:
        values.update(case.setup(tmp_path, data, request) or {})
    argv = shlex.split(case.argv.format(**values))
    expected = case.expected.format(**values)
    before = snapshot(tmp_path, data)

    code, out, err = _run(argv, tmp_path, case.inproc, capsys, monkeypatch)

    assert "Traceback" not in err, err
    assert code == case.code, f"exit code {code}, expected {case.code}\nstdout: {out}\nstderr: {err}"
    if case.code == 2:
        lines = [line for line in err.splitlines() if line.strip()]
        if case.leaves:  # it ran (and logged) before the fault: the sentence is the last line
            lines = lines[-1:]
        assert len(lines) == 1, f"expected one line on stderr, got {lines}"
        assert lines[0].startswith("ppp-dist") and ": error: " in lines[0], lines[0]
        assert expected in lines[0], f"{expected!r} not in {lines[0]!r}"
        if case.leaves:  # a fault in the middle of a run (a full disk): what it left must resume
            assert snapshot(data) == {k: v for k, v in before.items() if k.startswith(str(data))}
            case.check(tmp_path, out, err)
        else:
            assert snapshot(tmp_path, data) == before, "a failed command wrote or changed files"
    elif case.code == 1:  # the run failed after it started: the last line says so, the ledger has the details
        assert expected in err.splitlines()[-1], err
        assert snapshot(data) == {k: v for k, v in before.items() if k.startswith(str(data))}
        case.check(tmp_path, out, err)
    else:
        assert expected in (out if case.stream == "stdout" else err), f"{expected!r} not in\n{out}\n{err}"
        assert snapshot(data) == {k: v for k, v in before.items() if k.startswith(str(data))}
        if case.check is not None:
            case.check(tmp_path, out, err)


def test_every_entry_point_is_in_the_table():
    """Each command of the CLI (and --do) appears in at least one row."""
    from ppp_dist.tasks import GROUPS, TASKS

    first_words = {p.values[0].argv.split()[0] for p in ROWS if p.values[0].argv}
    for command in [*TASKS, *GROUPS, "plan", "status", "show-config", "demo", "--do"]:
        assert command in first_words, command
