"""scripts/batch: per-dataset local and SLURM scripts around ppp-dist, configured by one settings file.

Every script parses (bash -n) and is strict; each dataset's dry run exits 0 and prints the plan of its config;
the SLURM scripts render the sbatch header from the settings file and submit nothing in a dry run (a fake
`sbatch` on PATH proves it), and a real submission hands sbatch a job script that itself works; the worker jobs
of PPP_CLUSTER_KIND=slurm carry the settings; problems are reported before anything runs; and (slow) a tiny
dsb2018_ppp run goes train -> validate -> infer through the script and resumes without redoing anything.
"""

from __future__ import annotations

import dataclasses
import json
import os
import re
import shutil
import stat
import subprocess
import sys
import tomllib
import uuid
from pathlib import Path

import pytest

from ppp_dist.config import load_config
from ppp_dist.io import volumes

REPO = Path(__file__).resolve().parents[1]
BATCH = REPO / "scripts" / "batch"
DATASETS = ["flylight", "bbbc010_ppp", "bbbc010_pppdec", "dsb2018_ppp", "dsb2018_pppdec", "nuclei3d", "isbi2012"]
SCRIPTS = sorted(BATCH.rglob("*.sh"))
RUN_SLOW = os.environ.get("PPP_DIST_RUN_SLOW") == "1"


def _run(args: list[str], env: dict[str, str], cwd: Path = REPO, timeout: int = 240) -> subprocess.CompletedProcess:
    return subprocess.run(args, cwd=cwd, env=env, capture_output=True, text=True, timeout=timeout)


def _env(tmp_path: Path, site: str = "", **extra: str) -> dict[str, str]:
    """Environment with a settings file under tmp_path and a fake sbatch on PATH that records any call."""
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir(exist_ok=True)
    sbatch = bin_dir / "sbatch"
    sbatch.write_text('#!/usr/bin/env bash\nprintf "%s\\n" "$@" > "$FAKE_SBATCH_CALLED"\n'
                      'cp "${@: -1}" "$FAKE_SBATCH_CALLED.script"\necho "4242;testcluster"\n')
    sbatch.chmod(0o755)
    site_file = tmp_path / "site.env"
    site_file.write_text(f': "${{PPP_DATA_ROOT:={tmp_path / "data"}}}"\n: "${{PPP_RUNS_ROOT:={tmp_path / "runs"}}}"\n'
                         f': "${{PPP_VENV:={Path(sys.executable).parent.parent}}}"\n'
                         f': "${{PPP_DASHBOARD:=:0}}"\n{site}source {BATCH / "site.env"}\n')
    env = {k: v for k, v in os.environ.items() if not k.startswith("PPP_")}
    env.update(PATH=f"{bin_dir}:{env['PATH']}", PPP_SITE_ENV=str(site_file),
               FAKE_SBATCH_CALLED=str(tmp_path / "sbatch_called"), OMP_NUM_THREADS="1", **extra)
    return env


def _make_data(root: Path, name: str, tests: tuple[str, ...] = ("s1",)) -> None:
    """train/ and val/ with one (empty) sample each, test/ with raw + gt of the config's channels."""
    config = load_config([REPO / "configs" / f"{name}.toml"])
    two_d = config.model.patch_shape[0] == 1
    spatial = (1, 64, 64) if two_d else (32, 32, 32)
    for split in ("train", "val"):
        (root / name / split / "a.zarr").mkdir(parents=True, exist_ok=True)
    for sample in tests:
        store = root / name / "test" / f"{sample}.zarr"
        c = config.data.num_channels
        volumes.prepare_array(f"{store}/{config.data.raw_key}", shape=(c,) + spatial, chunks=(c,) + spatial,
                              dtype="uint8", axes="czyx")
        volumes.prepare_array(f"{store}/{config.data.gt_key}", shape=(1,) + spatial, chunks=(1,) + spatial,
                              dtype="uint16", axes="czyx")


def _sbatch_header(text: str) -> list[str]:
    """The #SBATCH lines of a job script; asserts they form one block right after the shebang."""
    lines = text.splitlines()
    assert lines[0] == "#!/bin/bash"
    header = []
    for line in lines[1:]:
        if not line.startswith("#SBATCH"):
            break
        header.append(line)
    assert header, text
    rest = "\n".join(lines[1 + len(header):])
    assert "#SBATCH" not in rest, "sbatch ignores #SBATCH lines after the first command"
    for line in header:
        assert re.fullmatch(r"#SBATCH --[a-z][a-z-]*(=\S+)?", line), line
    return header


# --- static checks ---------------------------------------------------------------------------------------

def test_one_local_and_one_slurm_script_per_dataset_config():
    # the dataset configs are the ones whose data comes from scripts/convert_to_zarr.py (not the demos)
    configs = {p.stem for p in (REPO / "configs").glob("*.toml") if "convert_to_zarr.py" in p.read_text()}
    assert configs == set(DATASETS)
    for kind in ("local", "slurm"):
        assert {p.stem for p in (BATCH / kind).glob("*.sh")} == set(DATASETS)


@pytest.mark.parametrize("script", SCRIPTS + [BATCH / "site.env"], ids=lambda p: str(p.relative_to(BATCH)))
def test_bash_n(script):
    result = subprocess.run(["bash", "-n", str(script)], capture_output=True, text=True)
    assert result.returncode == 0, result.stderr


@pytest.mark.parametrize("script", [s for s in SCRIPTS if s.parent.name in ("local", "slurm")],
                         ids=lambda p: str(p.relative_to(BATCH)))
def test_scripts_are_strict_and_executable(script):
    text = script.read_text()
    assert text.startswith("#!/usr/bin/env bash\n")
    assert "\nset -euo pipefail\n" in text
    assert script.stat().st_mode & stat.S_IXUSR
    assert f"ppp_batch_main {script.parent.name} {script.stem} \"$@\"" in text


@pytest.mark.skipif(shutil.which("shellcheck") is None, reason="shellcheck is not installed")
def test_shellcheck_is_clean():
    result = subprocess.run(["shellcheck", "-x", "-s", "bash", *map(str, SCRIPTS), str(BATCH / "site.env")], cwd=REPO,
                            capture_output=True, text=True)
    assert result.returncode == 0, result.stdout


# --- dry runs --------------------------------------------------------------------------------------------

@pytest.mark.parametrize("name", DATASETS)
def test_local_dry_run_prints_the_plan(name, tmp_path):
    _make_data(tmp_path / "data", name)
    result = _run(["bash", str(BATCH / "local" / f"{name}.sh"), "--dry-run"], _env(tmp_path))
    out = result.stdout
    assert result.returncode == 0, result.stderr + out
    config = f"{REPO}/configs/{name}.toml"
    assert f"+ ppp-dist train --config {config} --set 'data.train_data=[\"{tmp_path}/data/{name}/train\"]'" in out
    assert f"+ ppp-dist validate --config {config}" in out
    assert f"--exp {tmp_path}/runs/{name}/test/s1 --input {tmp_path}/data/{name}/test/s1.zarr/volumes/raw" in out
    assert "+ ppp-dist infer --gt " in out
    # ppp-dist show-config (the sections) and ppp-dist plan ran
    assert "[cluster]\nkind = \"local\"" in out and "[database]\nbackend = \"sqlite\"" in out
    head = load_config([config]).model.head
    assert f"patches  {tuple(load_config([config]).model.patch_shape)} ({head})" in out
    stages = [line.split()[0] for line in out.splitlines() if line.split()[:1] in (["predict"], ["vote"], ["paint"])]
    assert stages == ["predict", "vote", "paint"]
    assert "nothing was written (dry run)" in out and out.rstrip().endswith("dry run ok: no problems found")
    assert not (tmp_path / "runs").exists()
    assert not (tmp_path / "sbatch_called").exists()


SITE = """: "${PPP_PARTITION:=gpu-a100}"
: "${PPP_ACCOUNT:=lab42}"
: "${PPP_WALLTIME:=2-00:00:00}"
: "${PPP_CPUS:=16}"
: "${PPP_MEMORY:=128G}"
: "${PPP_GPUS:=2}"
: "${PPP_SBATCH_EXTRA:=--qos=long; --constraint=a100}"
: "${PPP_JOB_SETUP:=module load cuda/12.4}"
"""


@pytest.mark.parametrize("name", DATASETS)
def test_slurm_dry_run_renders_the_header_and_submits_nothing(name, tmp_path):
    _make_data(tmp_path / "data", name)
    result = _run(["bash", str(BATCH / "slurm" / f"{name}.sh"), "--dry-run"], _env(tmp_path, SITE))
    out = result.stdout
    assert result.returncode == 0, result.stderr + out
    script = out.split("job script (sbatch would get this; passwords shown as ***):\n", 1)[1].split("\n\n", 1)[0]
    assert _sbatch_header(script) == [
        f"#SBATCH --job-name=ppp-{name}", "#SBATCH --partition=gpu-a100", "#SBATCH --account=lab42",
        "#SBATCH --time=2-00:00:00", "#SBATCH --nodes=1", "#SBATCH --ntasks=1", "#SBATCH --cpus-per-task=16",
        "#SBATCH --mem=128G", "#SBATCH --gres=gpu:2", f"#SBATCH --output={tmp_path}/runs/{name}/slurm/%x-%j.out",
        "#SBATCH --qos=long", "#SBATCH --constraint=a100"]
    assert "\nmodule load cuda/12.4\n" in script
    assert script.rstrip().endswith(f"exec bash scripts/batch/local/{name}.sh --steps train,validate,infer "
                                    f"--exp {tmp_path}/runs/{name} --data {tmp_path}/data/{name}")
    assert "nothing was written (dry run)" in out and "dry run ok" in out
    assert not (tmp_path / "sbatch_called").exists() and not (tmp_path / "runs").exists()


def test_slurm_submission_writes_a_job_script_that_runs(tmp_path):
    name = "dsb2018_ppp"
    _make_data(tmp_path / "data", name)
    env = _env(tmp_path, SITE)
    result = _run(["bash", str(BATCH / "slurm" / f"{name}.sh"), "--steps", "train",
                   "--set", "vote.block_shape=[1, 128, 128]"], env)
    assert result.returncode == 0, result.stderr + result.stdout
    assert "submitted job 4242: " in result.stdout
    (job,) = (tmp_path / "runs" / name / "slurm").glob("*.sbatch")
    assert stat.S_IMODE(job.stat().st_mode) == 0o600  # it may hold the database DSN
    assert (tmp_path / "sbatch_called").read_text().split() == ["--parsable", str(job)]
    text = job.read_text()
    _sbatch_header(text)
    assert subprocess.run(["bash", "-n", str(job)]).returncode == 0
    assert "--steps train " in text and "--set 'vote.block_shape=[1, 128, 128]'" in text
    # the job script as SLURM would run it (module is a stand-in here), in dry-run mode
    (tmp_path / "bin" / "module").write_text("#!/bin/sh\nexit 0\n")
    (tmp_path / "bin" / "module").chmod(0o755)
    ran = _run(["bash", str(job)], {**env, "PPP_DRY_RUN": "1", "SLURM_CPUS_PER_TASK": "16"}, cwd=tmp_path)
    assert ran.returncode == 0, ran.stderr + ran.stdout
    assert "dry run ok" in ran.stdout and "--set 'vote.block_shape=[1, 128, 128]'" in ran.stdout
    assert "block (Z,Y,X)" in ran.stdout and "n_workers = 16" in ran.stdout  # the allocation's CPUs


def test_worker_jobs_carry_the_settings(tmp_path):
    """PPP_CLUSTER_KIND=slurm: the [cluster] the label stage gets makes dask-jobqueue worker jobs from the settings."""
    from ppp_dist.pipeline.cluster import make_jobqueue_cluster

    name = "nuclei3d"
    _make_data(tmp_path / "data", name)
    site = SITE + """: "${PPP_CLUSTER_KIND:=slurm}"
: "${PPP_WORKERS:=6}"
: "${PPP_WORKER_PARTITION:=cpu}"
: "${PPP_WORKER_WALLTIME:=03:00:00}"
: "${PPP_WORKER_CORES:=8}"
: "${PPP_WORKER_JOB_MEMORY:=48GiB}"
: "${PPP_WORKER_GPUS:=1}"
: "${PPP_WORKER_SBATCH_EXTRA:=--constraint=avx2}"
: "${PPP_WORKER_INTERFACE:=lo}"
: "${PPP_DB_BACKEND:=postgres}"
: "${PPP_DB_DSN:=postgresql://ppp:secret@db.example:5432/ppp_%run%}"
"""
    result = _run(["bash", str(BATCH / "local" / f"{name}.sh"), "--dry-run"], _env(tmp_path, site))
    out = result.stdout
    assert result.returncode == 0, result.stderr + out
    assert "secret" not in out and "postgresql://ppp:***@db.example:5432/ppp_nuclei3d_s1" in out
    sections = out.split("\n+ ppp-dist show-config ", 1)[1].split("\n", 1)[1].split("\nplan of ", 1)[0]
    config_file = tmp_path / "shown.toml"
    config_file.write_text(sections)
    table = tomllib.loads(sections)
    assert table["database"]["backend"] == "postgres"
    cluster = load_config([config_file]).cluster
    assert (cluster.kind, cluster.n_workers) == ("slurm", 6)
    jobs = make_jobqueue_cluster(dataclasses.replace(cluster, dashboard_address=":0"))
    try:
        script = jobs.job_script()
    finally:
        jobs.close()
    for line in ("#SBATCH -p cpu", "#SBATCH -A lab42", "#SBATCH -t 03:00:00", "#SBATCH --mem=48G",
                 "#SBATCH --gres=gpu:1", "#SBATCH --constraint=avx2", "--resources GPU=1",
                 "--interface lo"):
        assert line in script, f"{line!r} missing from\n{script}"


# --- refusals ---------------------------------------------------------------------------------------------

@pytest.mark.parametrize("site, args, message", [
    ("", ["--steps", "train,validate"], "train needs zarr samples in"),
    (': "${PPP_CLUSTER_KIND:=slurm}"\n', ["--steps", "infer"], "cannot share an SQLite file"),
    (': "${PPP_DB_BACKEND:=postgres}"\n: "${PPP_DB_DSN:=postgresql://u@h/ppp}"\n', ["--steps", "infer"],
     "2 test volumes would share the database of PPP_DB_DSN; put %run% in its database name"),
    (': "${PPP_CLUSTER_KIND:=scheduler}"\n', ["--steps", "infer"], "needs PPP_SCHEDULER=tcp://HOST:8786"),
    ("", ["--steps", "infer"], "no checkpoint in"),
    ("", ["--steps", "predict"], "unknown step 'predict' in --steps"),
    ("", ["--bogus"], "unknown option --bogus"),
    ("", ["--gt", "x.zarr/gt"], "--gt needs --input"),
])
@pytest.mark.parametrize("dry", [True, False], ids=["dry", "real"])
def test_problems_stop_before_anything_runs(tmp_path, site, args, message, dry):
    if "train needs" not in message:
        _make_data(tmp_path / "data", "isbi2012", tests=("a", "b"))
    result = _run(["bash", str(BATCH / "local" / "isbi2012.sh"), *(["--dry-run"] if dry else []), *args],
                  _env(tmp_path, site))
    assert result.returncode == 2, result.stdout + result.stderr
    assert message in result.stderr
    assert not (tmp_path / "runs").exists()


def test_help_names_the_options(tmp_path):
    result = _run(["bash", str(BATCH / "slurm" / "flylight.sh"), "--help"], _env(tmp_path))
    assert result.returncode == 0
    for option in ("--dry-run", "--steps", "--exp", "--data", "--input", "--gt", "--set", "--force", "--after"):
        assert f"  {option}" in result.stdout


# --- the Python helper --------------------------------------------------------------------------------------

def _helper(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, str(BATCH / "batch_helper.py"), *args], capture_output=True, text=True)


def test_infer_sets_take_the_validated_checkpoint_and_parameters(tmp_path):
    (tmp_path / "train").mkdir()
    for it in (3, 6):
        (tmp_path / "train" / f"checkpoint_{it}.pt").write_bytes(b"")
    result = _helper("infer-sets", str(tmp_path))
    assert result.returncode == 0 and result.stdout.splitlines() == [
        f'prediction.checkpoint="{tmp_path}/train/checkpoint_6.pt"']
    (tmp_path / "val").mkdir()
    (tmp_path / "val" / "best.json").write_text(json.dumps(
        {"checkpoint": 3, "name": "x", "params": {"patch_threshold": 0.9, "partition": "mutex_watershed",
                                                  "numinst_thresholds": [0.8, 0.2]}}))
    result = _helper("infer-sets", str(tmp_path))
    assert result.stdout.splitlines() == [f'prediction.checkpoint="{tmp_path}/train/checkpoint_3.pt"',
                                          "vote.patch_threshold=0.9", 'vote.partition="mutex_watershed"',
                                          "vote.numinst_thresholds=[0.8, 0.2]"]
    assert _helper("infer-sets", str(tmp_path / "nothing")).returncode == 2


def test_redact_hides_passwords():
    assert _helper("redact", "postgresql://me:pw@db:5432/x").stdout.strip() == "postgresql://me:***@db:5432/x"
    assert _helper("redact", "host=db password=pw dbname=x").stdout.strip() == "host=db password=*** dbname=x"


def _postgres_dsn_for(database: str) -> str:
    """The test server's DSN (key=value form) with another database name."""
    dsn = os.environ.get("PPP_DIST_TEST_POSTGRES_DSN", "")
    if not dsn:
        if os.environ.get("PPP_DIST_REQUIRE_POSTGRES") == "1":
            pytest.fail("PPP_DIST_REQUIRE_POSTGRES=1 but PPP_DIST_TEST_POSTGRES_DSN is not set")
        pytest.skip("no PostgreSQL: set PPP_DIST_TEST_POSTGRES_DSN (scripts/start_postgres.sh prints one)")
    from psycopg2.extensions import make_dsn

    return make_dsn(dsn, dbname=database)


def _drop_databases(prefix: str) -> None:
    import psycopg2

    conn = psycopg2.connect(_postgres_dsn_for("postgres"))
    conn.autocommit = True
    with conn.cursor() as cur:
        cur.execute("SELECT datname FROM pg_database WHERE datname LIKE %s", (prefix + "%",))
        for (name,) in cur.fetchall():
            cur.execute(f'DROP DATABASE "{name}"')
    conn.close()


@pytest.mark.postgres
def test_ensure_db_creates_the_database_once():
    import psycopg2

    name = f"ppp_batch_{uuid.uuid4().hex[:10]}"
    dsn = _postgres_dsn_for(name)
    try:
        first, second = _helper("ensure-db", dsn), _helper("ensure-db", dsn)
        assert first.returncode == 0 and f"created PostgreSQL database {name}" in first.stderr
        assert second.returncode == 0 and second.stderr == ""
        psycopg2.connect(dsn).close()
    finally:
        _drop_databases(name)


# --- a real run (slow) -------------------------------------------------------------------------------------

TINY = ["model.patch_shape=[1, 5, 5]", "model.num_fmaps=4", "model.fmap_inc_factors=[2.0]",
        "model.fmap_dec_factors=[2.0]", "model.downsample_factors=[[1, 2, 2]]",
        "model.train_input_shape=[1, 44, 44]", "model.predict_input_shape=[1, 44, 44]",
        "training.max_iterations=6", "training.checkpoint_every=3", "training.batch_size=2",
        "training.num_workers=0", "training.validate_every=0", "training.log_every=3",
        'data.raw_key="raw"', 'data.gt_key="labels/gt_instances"', 'data.normalization="none"',
        "vote.block_shape=[1, 32, 32]", "evaluation.block_shape=[1, 32, 32]", "validation.checkpoints=[3, 6]",
        "validation.grid.patch_threshold=[0.9]", "validation.grid.cover_threshold=[0.9]",
        'validation.grid.partition=["connected_components"]']


@pytest.mark.slow
@pytest.mark.skipif(not RUN_SLOW, reason="slow (about a minute); set PPP_DIST_RUN_SLOW=1 to run")
@pytest.mark.parametrize("backend", ["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)])
def test_local_run_trains_validates_infers_and_resumes(tmp_path, backend):
    from ppp_dist.data.writer import write_synthetic_volume

    data = tmp_path / "data" / "dsb2018_ppp"
    for split, seed in (("train", 3), ("val", 4), ("test", 5)):
        write_synthetic_volume(data / split / f"n{seed}.zarr", "nuclei2d", (60, 70), (30, 35), seed=seed)
    site = ': "${PPP_WORKERS:=2}"\n'
    prefix = f"ppp_batch_{uuid.uuid4().hex[:8]}"
    if backend == "postgres":
        site += f': "${{PPP_DB_BACKEND:=postgres}}"\n: "${{PPP_DB_DSN:={_postgres_dsn_for(prefix + "_%run%")}}}"\n'
    env = _env(tmp_path, site)
    command = ["bash", str(BATCH / "local" / "dsb2018_ppp.sh"), *[a for s in TINY for a in ("--set", s)]]
    try:
        first = _run(command, env, timeout=600)
        assert first.returncode == 0, first.stderr[-3000:] + first.stdout[-3000:]
        exp = tmp_path / "runs" / "dsb2018_ppp"
        sub = exp / "test" / "n5"
        assert (exp / "train" / "checkpoint_6.pt").is_file() and (exp / "val" / "best.json").is_file()
        best = json.loads((exp / "val" / "best.json").read_text())
        saved = load_config([sub / "config.toml"])
        assert saved.prediction.checkpoint == str(exp / "train" / f"checkpoint_{best['checkpoint']}.pt")
        assert saved.database.backend == backend and saved.cluster.n_workers == 2
        if backend == "postgres":
            assert f"dbname={prefix}_dsb2018_ppp_n5" in saved.database.dsn
        else:
            assert (sub / "graph.sqlite").is_file()
        instances = volumes.open_array(f"{sub}/instances.zarr/instances")
        assert instances.shape[1:] == (1, 60, 70)
        assert (sub / "evaluation" / "report.md").is_file()
        assert "vote: 6 blocks | done 6 | failed 0" in first.stdout
        # the same command again: nothing is redone
        again = _run(command, env, timeout=600)
        assert again.returncode == 0, again.stderr[-3000:]
        assert "train: done already, 6 iterations (max_iterations 6)" in again.stdout
        assert "validate: " in again.stdout and "skipped (--force redoes it)" in again.stdout
        assert "infer n5: " in again.stdout and "is newer than the checkpoint; skipped" in again.stdout
        status = _run([str(Path(sys.executable).with_name("ppp-dist")), "status", str(sub)], env)
        assert status.returncode == 0 and re.search(r"vote\s+6\s+0\s", status.stdout), status.stdout
    finally:
        if backend == "postgres":
            _drop_databases(prefix)


# --- the docs name only real commands, options and config keys ----------------------------------------------

DOCS = [REPO / "docs" / "cluster.md", REPO / "docs" / "viewing.md"]


def _subcommand_options() -> dict[str, set[str]]:
    from ppp_dist.cli import build_parser

    parser = build_parser()
    (sub,) = [a for a in parser._actions if a.choices and isinstance(a.choices, dict)]
    return {name: set(p._option_string_actions) for name, p in sub.choices.items()}


@pytest.mark.parametrize("doc", DOCS, ids=lambda p: p.name)
def test_docs_name_only_real_commands_options_and_keys(doc):
    from ppp_dist.config.loader import config_to_table

    text = doc.read_text()
    commands = _subcommand_options()
    seen = 0
    for match in re.finditer(r"ppp-dist ([a-z_-]+)([^\n`|#]*)", text):
        name, rest = match.group(1), match.group(2)
        if name in ("plan", "infer", "label", "status", "visualize", "show-config", "train") or name in commands:
            assert name in commands, f"{doc.name}: ppp-dist {name} is not a command"
            for flag in re.findall(r"(?<![\w-])(--?[a-z][a-z-]*)", rest):
                assert flag in commands[name], f"{doc.name}: ppp-dist {name} has no option {flag}"
            seen += 1
    assert seen, doc.name
    table = config_to_table(load_config([]))

    def known(section: str, key: str) -> bool:
        node = table
        for part in section.split("."):
            if not isinstance(node, dict) or part not in node:
                return False
            node = node[part]
        return isinstance(node, dict) and key in node

    keys = re.findall(r"`\[([a-z_.]+)\] ([a-z_]+)", text)
    keys += [(m[0], m[1]) for m in re.findall(r"--set '?([a-z_]+)\.([a-z_]+)=", text)]
    keys += [("cluster", k) for k in re.findall(r"'cluster\.([a-z_]+)=", text)]
    assert len(keys) >= 5
    for section, key in keys:
        assert known(section, key), f"{doc.name}: [{section}] {key} is not a config key"
    # the batch-script options the docs name exist: in the script command lines and the "Options:" paragraph
    if doc.name == "cluster.md":
        usage = subprocess.run(["bash", str(BATCH / "slurm" / "flylight.sh"), "--help"], capture_output=True,
                               text=True).stdout
        named = re.findall(r"bash scripts/batch/(?:local|slurm)/\w+\.sh([^\n#]*)", text)
        named.append(text.split("\nOptions: ", 1)[1].split("\n\n", 1)[0])
        flags = {f for part in named for f in re.findall(r"(?<![\w-])(--[a-z][a-z-]*)", part)}
        assert {"--dry-run", "--steps", "--after", "--set"} <= flags
        for flag in flags:
            assert re.search(rf"^  (-\w, )?{flag}\b", usage, re.M), \
                f"{doc.name}: the batch scripts have no option {flag}"
