"""Talking to the real SLURM in tests: job states, waiting for jobs, cancelling them."""

from __future__ import annotations

import re
import subprocess
import time
from pathlib import Path

ACTIVE = {"PENDING", "CONFIGURING", "RUNNING", "COMPLETING", "SUSPENDED", "REQUEUED", "RESIZING"}


def job_info(job_id: str) -> dict[str, str]:
    """``scontrol show job -o JOBID`` as a dict (JobState, StartTime, EndTime, WorkDir, ...); {} if unknown.

    SLURM keeps finished jobs for MinJobAge (300 s by default), long enough for a test to look them up.
    """
    out = subprocess.run(["scontrol", "show", "job", "-o", str(job_id)], capture_output=True, text=True, timeout=30)
    if out.returncode != 0:
        return {}
    return dict(re.findall(r"(\w+)=(\S*)", out.stdout))


def job_state(job_id: str) -> str:
    return job_info(job_id).get("JobState", "UNKNOWN")


def jobs_under(folder: Path) -> list[str]:
    """Ids of the jobs SLURM still knows whose working directory is ``folder`` or below it."""
    out = subprocess.run(["squeue", "-h", "-o", "%i|%Z"], capture_output=True, text=True, timeout=30)
    ids = []
    for line in out.stdout.splitlines():
        job, _, workdir = line.partition("|")
        if workdir == str(folder) or workdir.startswith(f"{folder}/"):
            ids.append(job.strip())
    return ids


def wait_for_jobs(job_ids: list[str], timeout: float) -> dict[str, str]:
    """Wait until none of ``job_ids`` is pending or running; their final states."""
    deadline = time.monotonic() + timeout
    while True:
        states = {job: job_state(job) for job in job_ids}
        if not ACTIVE & set(states.values()):
            return states
        if time.monotonic() > deadline:
            raise AssertionError(f"jobs still active after {timeout:.0f} s: {states}")
        time.sleep(0.5)


def cancel_jobs(job_ids: list[str]) -> None:
    """Cancel the jobs that are still active (ignores the finished ones) and wait for them to end."""
    active = [job for job in dict.fromkeys(job_ids) if job_state(job) in ACTIVE]
    if active:
        subprocess.run(["scancel", *active], capture_output=True, timeout=30)
        wait_for_jobs(active, timeout=60)


def submitted_job(output: str) -> str:
    """The job id of a batch script's "submitted job N: ..." line."""
    match = re.search(r"^submitted job (\d+): ", output, re.MULTILINE)
    assert match, output
    return match.group(1)
