"""The real single-node SLURM of scripts/start_slurm.sh: availability, and the jobs a test leaves behind.

Every test here carries the ``slurm`` marker and needs a SLURM that answers (``sinfo``) with an idle node.
Without one they skip; with PPP_DIST_REQUIRE_SLURM=1 (set by .ci/run, which starts SLURM) they fail, so CI
cannot silently drop them.
"""

from __future__ import annotations

import os
import shutil
import subprocess

import pytest
from _slurm_helpers import cancel_jobs, jobs_under

REQUIRE_SLURM = os.environ.get("PPP_DIST_REQUIRE_SLURM") == "1"


def _unavailable(reason: str) -> None:
    if REQUIRE_SLURM:
        pytest.fail(f"PPP_DIST_REQUIRE_SLURM=1 but {reason}")
    pytest.skip(f"{reason} (bash scripts/start_slurm.sh starts one, as root)")


@pytest.fixture(scope="session")
def slurm_node() -> dict[str, str]:
    """The node of the running SLURM: {"partition", "node", "cpus", "memory_mb"}."""
    if shutil.which("sbatch") is None or shutil.which("sinfo") is None:
        _unavailable("SLURM is not installed (no sbatch / sinfo)")
    try:
        out = subprocess.run(["sinfo", "-h", "-o", "%P|%N|%c|%m|%t"], capture_output=True, text=True, timeout=30)
    except subprocess.TimeoutExpired:
        _unavailable("sinfo did not answer within 30 s")
    lines = [line for line in out.stdout.splitlines() if line.strip()]
    if out.returncode != 0 or not lines:
        _unavailable(f"SLURM does not answer ({(out.stderr.strip().splitlines() or ['no node'])[-1]})")
    partition, node, cpus, memory, state = lines[0].split("|")
    if state.rstrip("*~#") not in ("idle", "mix", "alloc"):
        _unavailable(f"the SLURM node {node} is {state}, not idle")
    return {"partition": partition.rstrip("*"), "node": node, "cpus": cpus, "memory_mb": memory}


@pytest.fixture
def slurm_jobs(slurm_node, tmp_path):
    """Job ids a test submits (append to the list); they and every job started from tmp_path are cancelled
    at the end, so a failing test leaves no job holding the node's CPUs."""
    submitted: list[str] = []
    yield submitted
    cancel_jobs(submitted + jobs_under(tmp_path))
