"""scripts/batch/slurm/*.sh submitted with sbatch to the real SLURM of scripts/start_slurm.sh.

On tiny DSB2018-like data: a training job, and validate + infer chained after it with --after, both run to
completion; a driver job cancelled with scancel during training is resubmitted with the same command and
continues from its newest checkpoint. The job scripts of every dataset pass `sbatch --test-only` (checked
by the scheduler, nothing submitted), rendered by their --dry-run.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
import time
from pathlib import Path

import pytest
from _slurm_helpers import job_info, job_state, submitted_job, wait_for_jobs

pytestmark = pytest.mark.slurm

REPO = Path(__file__).resolve().parents[2]
BATCH = REPO / "scripts" / "batch"
DATASETS = ["flylight", "bbbc010_ppp", "bbbc010_pppdec", "dsb2018_ppp", "dsb2018_pppdec", "nuclei3d", "isbi2012"]
NAME = "dsb2018_ppp"
# a network small enough to train in seconds on one core
TINY = ["model.patch_shape=[1, 5, 5]", "model.num_fmaps=4", "model.fmap_inc_factors=[2.0]",
        "model.fmap_dec_factors=[2.0]", "model.downsample_factors=[[1, 2, 2]]",
        "model.train_input_shape=[1, 44, 44]", "model.predict_input_shape=[1, 44, 44]",
        "training.batch_size=2", "training.num_workers=0", "training.validate_every=0",
        'data.raw_key="raw"', 'data.gt_key="labels/gt_instances"', 'data.normalization="none"',
        "vote.block_shape=[1, 32, 32]", "evaluation.block_shape=[1, 32, 32]", "validation.checkpoints=[3, 6]",
        "validation.grid.patch_threshold=[0.9]", "validation.grid.cover_threshold=[0.9]",
        'validation.grid.partition=["connected_components"]']


def _site(tmp_path: Path, partition: str) -> Path:
    """A settings file for the one-node SLURM: a 1-CPU, 2 GB, GPU-less driver job; data and runs in tmp_path."""
    site = tmp_path / "site.env"
    site.write_text(f""": "${{PPP_DATA_ROOT:={tmp_path / 'data'}}}"
: "${{PPP_RUNS_ROOT:={tmp_path / 'runs'}}}"
: "${{PPP_VENV:={Path(sys.executable).parent.parent}}}"
: "${{PPP_PARTITION:={partition}}}"
: "${{PPP_WALLTIME:=00:20:00}}"
: "${{PPP_CPUS:=1}}"
: "${{PPP_MEMORY:=2G}}"
: "${{PPP_GPUS:=0}}"
: "${{PPP_DASHBOARD:=127.0.0.1:0}}"
source {BATCH / 'site.env'}
""")
    return site


def _env(site: Path) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("PPP_")}
    return {**env, "PPP_SITE_ENV": str(site), "OMP_NUM_THREADS": "1"}


def _script(name: str, *args: str, env: dict[str, str]) -> subprocess.CompletedProcess:
    return subprocess.run(["bash", str(BATCH / "slurm" / f"{name}.sh"), *args], cwd=REPO, env=env,
                          capture_output=True, text=True, timeout=300)


def _sets(*extra: str) -> list[str]:
    return [a for s in (*TINY, *extra) for a in ("--set", s)]


def _write_data(root: Path, splits=("train", "val", "test")) -> None:
    from ppp_dist.data.writer import write_synthetic_volume

    for split, seed in (("train", 3), ("val", 4), ("test", 5)):
        if split in splits:
            write_synthetic_volume(root / NAME / split / f"n{seed}.zarr", "nuclei2d", (60, 70), (30, 35), seed=seed)


def _log(exp: Path, job: str) -> str:
    path = exp / "slurm" / f"ppp-{NAME}-{job}.out"
    return path.read_text() if path.exists() else f"(no log {path})"


def test_train_job_then_validate_and_infer_chained_with_after(slurm_node, slurm_jobs, tmp_path):
    _write_data(tmp_path / "data")
    env = _env(_site(tmp_path, slurm_node["partition"]))
    first = _script(NAME, "--steps", "train", *_sets("training.max_iterations=6", "training.checkpoint_every=3"),
                    env=env)
    assert first.returncode == 0, first.stderr + first.stdout
    train = submitted_job(first.stdout)
    slurm_jobs.append(train)
    second = _script(NAME, "--steps", "validate,infer", "--after", train,
                     *_sets("training.max_iterations=6", "training.checkpoint_every=3"), env=env)
    assert second.returncode == 0, second.stderr + second.stdout
    rest = submitted_job(second.stdout)
    slurm_jobs.append(rest)
    assert f"afterok:{train}" in job_info(rest).get("Dependency", "")  # SLURM holds it for the training
    states = wait_for_jobs([train, rest], timeout=900)
    exp = tmp_path / "runs" / NAME
    assert states == {train: "COMPLETED", rest: "COMPLETED"}, {j: _log(exp, j)[-3000:] for j in (train, rest)}
    assert job_info(rest)["StartTime"] >= job_info(train)["EndTime"]
    assert "train: 6 iterations (6 now" in _log(exp, train)
    rest_log = _log(exp, rest)
    assert "validate: " in rest_log and "infer n5: outputs in" in rest_log and "done: " in rest_log
    assert "vote: 6 blocks | done 6 | failed 0" in rest_log
    assert (exp / "val" / "best.json").is_file()
    sub = exp / "test" / "n5"
    assert (sub / "instances.zarr" / "instances").is_dir() and (sub / "evaluation" / "report.md").is_file()


def test_cancelled_driver_job_resumes_when_resubmitted(slurm_node, slurm_jobs, tmp_path):
    _write_data(tmp_path / "data", splits=("train",))
    env = _env(_site(tmp_path, slurm_node["partition"]))
    total = 400
    command = ["--steps", "train", *_sets(f"training.max_iterations={total}", "training.checkpoint_every=20",
                                          "training.log_every=20")]
    exp = tmp_path / "runs" / NAME
    first = _script(NAME, *command, env=env)
    assert first.returncode == 0, first.stderr + first.stdout
    job = submitted_job(first.stdout)
    slurm_jobs.append(job)
    deadline = time.monotonic() + 300
    while not list((exp / "train").glob("checkpoint_*.pt")) and time.monotonic() < deadline:
        assert job_state(job) in ("PENDING", "RUNNING"), _log(exp, job)[-3000:]
        time.sleep(0.2)
    subprocess.run(["scancel", job], check=True, timeout=30)
    assert wait_for_jobs([job], timeout=120) == {job: "CANCELLED"}
    kept = sorted(int(p.stem.split("_")[1]) for p in (exp / "train").glob("checkpoint_*.pt"))
    assert kept and kept[-1] < total, f"training was over before the cancel: {kept}"
    # the same command again: a new job that continues from the newest checkpoint
    again = _script(NAME, *command, env=env)
    assert again.returncode == 0, again.stderr + again.stdout
    job2 = submitted_job(again.stdout)
    slurm_jobs.append(job2)
    assert job2 != job
    assert wait_for_jobs([job2], timeout=600) == {job2: "COMPLETED"}, _log(exp, job2)[-3000:]
    log = _log(exp, job2)
    assert f"train: {total} iterations ({total - kept[-1]} now" in log, log[-3000:]
    assert (exp / "train" / f"checkpoint_{total}.pt").is_file()


def test_every_dataset_job_script_passes_sbatch_test_only(slurm_node, tmp_path):
    """--dry-run renders each dataset's driver job for this SLURM; `sbatch --test-only` accepts it (the
    scheduler checks partition, CPUs, memory and options) and submits nothing."""
    env = _env(_site(tmp_path, slurm_node["partition"]))
    for name in DATASETS:
        (tmp_path / "data" / name / "train" / "a.zarr").mkdir(parents=True)
    before = subprocess.run(["squeue", "-h", "-o", "%i"], capture_output=True, text=True).stdout.split()
    for name in DATASETS:
        dry = _script(name, "--dry-run", "--steps", "train", env=env)
        assert dry.returncode == 0, dry.stderr + dry.stdout
        script = dry.stdout.split("job script (sbatch would get this; passwords shown as ***):\n", 1)[1]
        script = script.split("\n\n", 1)[0] + "\n"
        assert f"#SBATCH --job-name=ppp-{name}\n" in script and "#SBATCH --cpus-per-task=1\n" in script
        job_file = tmp_path / f"{name}.sbatch"
        job_file.write_text(script)
        test = subprocess.run(["sbatch", "--test-only", str(job_file)], cwd=tmp_path, capture_output=True,
                              text=True, timeout=60)
        assert test.returncode == 0 and re.search(r"Job \d+ to start at ", test.stderr), (name, test.stderr)
    after = subprocess.run(["squeue", "-h", "-o", "%i"], capture_output=True, text=True).stdout.split()
    assert set(after) <= set(before)  # nothing was submitted
    assert not (tmp_path / "runs").exists()
