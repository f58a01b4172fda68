"""scripts/batch cannot be made to run a command (issue #15 item 2): the injection suite of the batch scripts.

Every option of the scripts and every setting that reaches a job script gets the attempts below. Each attempt
either is refused before anything is submitted (exit 2, one line naming the option) or, where the value is
legal for a shell word, is quoted in the job script: the submitted script (recorded by a fake sbatch) is
then run with bash, and the marker file the attempt would create must not appear. The worker settings that
dask-jobqueue renders ([cluster] via PPP_WORKER_*) are refused by the config check when the script starts.
"""

from __future__ import annotations

import re

import pytest
from test_batch_scripts import BATCH, _env, _make_data, _run

NAME = "dsb2018_ppp"


def _attempts(mark: str) -> list[str]:
    return [f"x\ntouch {mark} #", f"$(touch {mark})", f"x'; touch {mark}; echo '", f'x"; touch {mark}; echo "',
            f"`touch {mark}`", f"x;touch {mark}"]


def _option_value(option: str, attempt: str, tmp) -> list[str]:
    data = tmp / "data" / NAME
    values = {"--steps": attempt, "--exp": f"{tmp}/runs/{attempt}", "--data": f"{data}{attempt}",
              "--input": f"{data}/test/s1.zarr/volumes/raw{attempt}", "--gt": f"{data}/test/s1.zarr/gt{attempt}",
              "--set": f'data.raw_key="raw{attempt}"', "--after": f"4711{attempt}"}
    args = [option, values[option]]
    if option == "--gt":
        args = ["--input", f"{data}/test/s1.zarr/volumes/raw", *args]
    if option in ("--input", "--gt", "--set"):
        args = ["--steps", "train", *args]  # submitted: nothing else is missing
    return args


OPTIONS = ["--steps", "--exp", "--data", "--input", "--gt", "--set", "--after"]


@pytest.mark.parametrize("attempt", range(6))
@pytest.mark.parametrize("option", OPTIONS)
def test_no_option_value_becomes_a_command_of_the_job_script(tmp_path, option, attempt):
    mark = tmp_path / "pwned"
    _make_data(tmp_path / "data", NAME)
    env = _env(tmp_path)
    args = _option_value(option, _attempts(mark)[attempt], tmp_path)
    result = _run(["bash", str(BATCH / "slurm" / f"{NAME}.sh"), *args], env)
    assert not mark.exists(), result.stdout + result.stderr
    if option in ("--set", "--input") and attempt in (1, 2, 4, 5):  # legal values: these must get through, quoted
        assert result.returncode == 0, result.stderr
    if result.returncode != 0:  # refused before anything was submitted
        assert result.returncode == 2 and "Traceback" not in result.stderr, result.stderr
        assert re.search(r"^scripts/batch/slurm/dsb2018_ppp.sh: (error|problem): ", result.stderr, re.M), result.stderr
        assert not (tmp_path / "sbatch_called").exists()
        return
    # submitted: the job script quotes the value; running it (as SLURM would, in dry-run mode) runs no command
    script = (tmp_path / "sbatch_called.script").read_text()
    header = [line for line in script.splitlines() if line.startswith("#SBATCH")]
    assert all(re.fullmatch(r"#SBATCH --[a-z][a-z-]*(=\S+)?", line) for line in header), header
    ran = _run(["bash", str(tmp_path / "sbatch_called.script")], {**env, "PPP_DRY_RUN": "1"}, cwd=tmp_path)
    assert not mark.exists(), ran.stdout + ran.stderr
    assert "Traceback" not in ran.stderr


def test_the_suite_covers_every_option_that_takes_a_value():
    text = (BATCH / "common.sh").read_text()
    taking = re.search(r"\n\s+(--steps \| [^)]*)\)\n", text).group(1)
    assert sorted(o.strip() for o in taking.split("|")) == sorted(OPTIONS)


SETTINGS = ["PPP_PARTITION", "PPP_ACCOUNT", "PPP_WALLTIME", "PPP_CPUS", "PPP_MEMORY", "PPP_GPUS", "PPP_SBATCH_EXTRA",
            "PPP_WORKER_PARTITION", "PPP_WORKER_WALLTIME", "PPP_WORKER_JOB_MEMORY", "PPP_WORKER_SBATCH_EXTRA",
            "PPP_ACCOUNT"]


@pytest.mark.parametrize("attempt", [0, 1, 5])
@pytest.mark.parametrize("setting", sorted(set(SETTINGS)))
def test_no_setting_becomes_a_command_of_a_job_script(tmp_path, setting, attempt):
    """The settings of the driver job (#SBATCH lines) and of the worker jobs (dask-jobqueue's #SBATCH lines)."""
    mark = tmp_path / "pwned"
    _make_data(tmp_path / "data", NAME)
    site = ': "${PPP_CLUSTER_KIND:=slurm}"\n: "${PPP_DB_BACKEND:=postgres}"\n: "${PPP_DB_DSN:=postgresql://u@h/p_%run%}"\n'
    env = _env(tmp_path, site, **{setting: _attempts(mark)[attempt]})
    result = _run(["bash", str(BATCH / "slurm" / f"{NAME}.sh"), "--steps", "train"], env)
    assert result.returncode == 2, result.stdout + result.stderr
    assert not mark.exists() and not (tmp_path / "sbatch_called").exists()
    assert "Traceback" not in result.stderr
    field = {"PPP_WORKER_PARTITION": "[cluster] queue", "PPP_WORKER_WALLTIME": "[cluster] walltime",
             "PPP_WORKER_JOB_MEMORY": "[cluster] memory", "PPP_WORKER_SBATCH_EXTRA": "[cluster] job_extra_directives",
             "PPP_PARTITION": "PPP_WORKER_PARTITION"}.get(setting, setting)  # the worker partition defaults to it
    assert setting in result.stderr or field in result.stderr, result.stderr
