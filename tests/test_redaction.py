"""No database password leaves ppp_dist (issue #15 item 3): in both DSN forms (URL and libpq's key=value), in
error sentences, console and log files at DEBUG (the driver's run.log and the workers' logs), the saved config
and its backups, checkpoints' config, and show-config. The saved config keeps a DSN that still connects (with
the password of secrets.toml, readable by its owner only), so resuming and status work.
"""

from __future__ import annotations

import os
import stat
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from ppp_dist.redact import has_password, redact, without_password

EXE = Path(sys.executable).with_name("ppp-dist")
SECRET = "s3cr3t-pw"


@pytest.mark.parametrize("text, masked, dropped", [
    (f"postgresql://me:{SECRET}@db1:5432/graph", "postgresql://me:***@db1:5432/graph", "postgresql://me@db1:5432/graph"),
    (f"postgres://:{SECRET}@db1/g", "postgres://:***@db1/g", "postgres://@db1/g"),
    (f"postgresql://me:p@ss{SECRET}@db1/g", "postgresql://me:***@db1/g", "postgresql://me@db1/g"),
    (f"postgresql://me@db1/g?sslmode=require&password={SECRET}", "postgresql://me@db1/g?sslmode=require&password=***",
     "postgresql://me@db1/g?sslmode=require"),
    (f"host=db1 user=me password={SECRET} dbname=g", "host=db1 user=me password=*** dbname=g",
     "host=db1 user=me dbname=g"),
    (f"host=db1 password = '{SECRET} with blanks' dbname=g", "host=db1 password = *** dbname=g", "host=db1 dbname=g"),
    (f"password={SECRET}", "password=***", ""),
    ("host=db1 dbname=g", "host=db1 dbname=g", "host=db1 dbname=g"),
    ("tcp://127.0.0.1:8786", "tcp://127.0.0.1:8786", "tcp://127.0.0.1:8786"),
])
def test_both_dsn_forms(text, masked, dropped):
    assert redact(text) == masked and redact(f"error: cannot reach {text} (refused)") == \
        f"error: cannot reach {masked} (refused)"
    assert without_password(text) == dropped
    assert has_password(text) == (SECRET in text)


def _kv(dsn_url: str) -> str:
    """The libpq key=value form of a DSN (the form that leaked)."""
    from psycopg2.extensions import make_dsn, parse_dsn

    return make_dsn(**parse_dsn(dsn_url))


def _prediction(path: Path) -> Path:
    import zarr

    from ppp_dist.ops.patches import numinst_onehot, numinst_target, patch_targets

    gt = np.zeros((1, 1, 24, 24), np.uint16)
    gt[0, 0, 2:9, 2:9], gt[0, 0, 12:20, 12:20] = 1, 2
    group = zarr.open_group(path, mode="w")
    group.create_array("patches", data=(patch_targets(gt, (1, 5, 5)) * 255).astype(np.uint8))
    group.create_array("numinst", data=(numinst_onehot(numinst_target(gt)) * 255).astype(np.uint8))
    return path


def _run(args: list[str], cwd: Path, env: dict | None = None) -> subprocess.CompletedProcess:
    base = {k: v for k, v in os.environ.items() if k not in ("PPP_DIST_DB_DSN", "PGPASSWORD")}
    return subprocess.run([str(EXE), *args], cwd=cwd, capture_output=True, text=True, timeout=300,
                          env={**base, **(env or {})})


def _files(folder: Path) -> dict[Path, bytes]:
    return {p: p.read_bytes() for p in folder.rglob("*") if p.is_file()}


@pytest.mark.parametrize("form", ["url", "key=value"])
def test_unreachable_server_sentence_has_no_password(tmp_path, form):
    dsn = f"postgresql://me:{SECRET}@127.0.0.1:1/graph"
    dsn = dsn if form == "url" else _kv(dsn)
    for command in (["label", "--root", "runs", "--input", str(_prediction(tmp_path / "p.zarr")),
                     "--set", "model.patch_shape=[1,5,5]"], ["status", "."]):
        result = _run([*command, "--set", "database.backend=postgres", "--set", f"database.dsn='{dsn}'", "-v"]
                      if command[0] == "label" else command, tmp_path)
        assert result.returncode == 2 and SECRET not in result.stderr + result.stdout, result.stderr
    assert "cannot reach PostgreSQL at" in result.stderr or "not a ppp_dist experiment" in result.stderr


@pytest.mark.parametrize("form", ["url", "key=value"])
def test_show_config_masks_the_password(tmp_path, form):
    dsn = f"postgresql://me:{SECRET}@db1:5432/graph"
    dsn = dsn if form == "url" else _kv(dsn)
    shown = _run(["show-config", "--set", f"database.dsn='{dsn}'"], tmp_path)
    assert shown.returncode == 0 and SECRET not in shown.stdout
    assert f'dsn = "{redact(dsn)}"' in shown.stdout and "***" in shown.stdout


@pytest.mark.postgres
@pytest.mark.parametrize("form", ["url", "key=value"])
def test_a_run_leaves_the_password_nowhere_but_secrets_toml(tmp_path, form, postgres_dsn):
    """A blockwise label on PostgreSQL at DEBUG, resumed with another config (a backup) and shown by status."""
    dsn = postgres_dsn if form == "url" else _kv(postgres_dsn)
    password = (dsn.split("password=")[1].split()[0] if form == "key=value"
                else dsn.split("://", 1)[1].split("@", 1)[0].split(":", 1)[1])
    assert has_password(dsn) and len(password) >= 4
    args = ["label", "--root", "runs", "--input", str(_prediction(tmp_path / "p.zarr")), "-v",
            "--set", "model.patch_shape=[1,5,5]", "--set", "vote.block_shape=[1,32,32]", "--set", "cluster.n_workers=1",
            "--set", "cluster.dashboard_address=:0", "--set", "database.backend=postgres",
            "--set", f"database.dsn='{dsn}'", "--set", 'general.log_level="DEBUG"']
    first = _run(args, tmp_path)
    assert first.returncode == 0, first.stderr
    (exp,) = (tmp_path / "runs").iterdir()
    assert "database" in (exp / "logs" / "run.log").read_text()  # the log names the database (without password)
    # resumed from the saved config alone (the password comes from secrets.toml), with a change: a backup
    resumed = _run(["label", "--exp", str(exp), "--set", "vote.patch_threshold=0.6", "-v"], tmp_path)
    assert resumed.returncode == 0, resumed.stderr
    assert list((exp / "backups").glob("config_*.toml"))
    status = _run(["status", str(exp)], tmp_path)
    assert status.returncode == 0 and "blockwise stages (ledger)" in status.stdout, status.stderr
    # the test server's password may also be a user or database name: look for it as a DSN holds it
    marks = [f"password={password}", f":{password}@"]
    secrets = exp / "secrets.toml"
    assert stat.S_IMODE(secrets.stat().st_mode) == 0o600 and any(m in secrets.read_text() for m in marks)
    leaks = [str(p) for p, data in _files(exp).items() if p != secrets and any(m.encode() in data for m in marks)]
    assert not leaks, leaks
    logs = list((exp / "logs").rglob("*.log"))
    assert len(logs) >= 2  # run.log and the workers' logs were looked at
    for result in (first, resumed, status):
        assert not any(m in result.stdout + result.stderr for m in marks)
    from ppp_dist.config import load_config
    assert load_config([exp / "config.toml"]).database.dsn == without_password(dsn)


def test_checkpoints_keep_no_password(tmp_path):
    from ppp_dist.config import load_config
    from ppp_dist.config.loader import config_to_table

    config = load_config([], [f"database.dsn='host=db1 password={SECRET} dbname=g'"])
    assert SECRET not in repr(config_to_table(config)) and SECRET in config.database.dsn
