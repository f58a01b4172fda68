"""scripts/start_slurm.sh and scripts/stop_slurm.sh: strict bash, and a second start changes nothing."""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
SCRIPTS = [REPO / "scripts" / "start_slurm.sh", REPO / "scripts" / "stop_slurm.sh"]
RECORD = Path("/run/ppp_dist_slurm")


@pytest.mark.parametrize("script", SCRIPTS, ids=lambda p: p.name)
def test_scripts_parse_and_are_strict(script):
    assert subprocess.run(["bash", "-n", str(script)]).returncode == 0
    text = script.read_text()
    assert text.startswith("#!/usr/bin/env bash\n") and "\nset -euo pipefail\n" in text
    if shutil.which("shellcheck"):
        result = subprocess.run(["shellcheck", "-s", "bash", str(script)], capture_output=True, text=True)
        assert result.returncode == 0, result.stdout


@pytest.mark.slurm
@pytest.mark.skipif(os.geteuid() != 0, reason="start_slurm.sh needs root")
def test_starting_a_running_slurm_again_starts_nothing(slurm_node):
    before = {p.name: p.read_text() for p in RECORD.glob("*.pid")} if RECORD.is_dir() else {}
    result = subprocess.run(["bash", str(SCRIPTS[0])], capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    assert result.stdout.startswith(f"SLURM is up: partition {slurm_node['partition']}")
    assert "started" not in result.stderr
    after = {p.name: p.read_text() for p in RECORD.glob("*.pid")} if RECORD.is_dir() else {}
    assert after == before
