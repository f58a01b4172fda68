"""`ppp-dist label` with [cluster] kind = "slurm" on the real SLURM of scripts/start_slurm.sh.

dask-jobqueue submits two worker jobs (one core each, scheduler and workers on the loopback interface);
the vote -> agglomerate -> paint stages run on them and give the same bytes as a local cluster. While the
vote stage runs, the dashboard's bokeh progress page is read over HTTP on 127.0.0.1 and shows the stage's
blocks. A worker job cancelled with scancel in the middle of the vote stage costs nothing but time: its
blocks are rescheduled on the other job and the bytes stay the same.
"""

from __future__ import annotations

import importlib.util
import os
import re
import socket
import sqlite3
import subprocess
import sys
import threading
import time
import urllib.request
from pathlib import Path
from urllib.parse import urlsplit

import numpy as np
import pytest
from _slurm_helpers import job_state

from ppp_dist.data import crossing_tubes_3d
from ppp_dist.io import volumes

pytestmark = pytest.mark.slurm

TESTS = Path(__file__).resolve().parents[1]
PPP_DIST = Path(sys.executable).with_name("ppp-dist")
SHAPE, BLOCK, PATCH = (36, 40, 42), (12, 10, 14), (5, 5, 5)
BLOCKS = 3 * 4 * 3
CONFIG = f"[model]\npatch_shape = {list(PATCH)}\n[vote]\nblock_shape = {list(BLOCK)}\n"
SLURM = ["--set", 'cluster.kind="slurm"', "--set", "cluster.n_workers=2", "--set", "cluster.cores=1",
         "--set", 'cluster.memory="1GiB"', "--set", 'cluster.walltime="00:15:00"', "--set", 'cluster.interface="lo"']


def _write_oracle(path: Path) -> str:
    """An oracle prediction (patches and numinst of three crossing tubes) with tests/pipeline's helper."""
    spec = importlib.util.spec_from_file_location("_pipeline_helpers_for_slurm",
                                                  TESTS / "pipeline" / "_pipeline_helpers.py")
    helpers = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(helpers)
    gt = crossing_tubes_3d(SHAPE, n_tubes=3, seed=4).instances
    return helpers.write_oracle(path, gt, PATCH, BLOCK)


def _config(store: str) -> list[str]:
    return ["--config", str(Path(store).parent / "config.toml")]


def _env() -> dict[str, str]:
    # the worker jobs inherit this environment (sbatch --export=ALL)
    return {**{k: v for k, v in os.environ.items() if not k.startswith("PPP_")}, "OMP_NUM_THREADS": "1",
            "PYTHONUNBUFFERED": "1"}


def _instances(exp: Path) -> bytes:
    return np.asarray(volumes.open_array(f"{exp}/instances.zarr/instances")[...]).tobytes()


@pytest.fixture(scope="module")
def oracle(tmp_path_factory) -> tuple[str, bytes]:
    """The input, and the instances a local cluster of two worker processes paints from it."""
    root = tmp_path_factory.mktemp("slurm_label")
    store = _write_oracle(root / "oracle.zarr")
    (root / "config.toml").write_text(CONFIG)
    exp = root / "local"
    exp.mkdir()
    done = subprocess.run([str(PPP_DIST), "label", "--exp", str(exp), "--input", store,
                           "--config", str(root / "config.toml"), "--set", "cluster.n_workers=2",
                           "--set", 'cluster.dashboard_address=":0"'],
                          cwd=root, env=_env(), capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]
    assert f"vote: {BLOCKS} blocks | done {BLOCKS} | failed 0" in done.stdout
    return store, _instances(exp)


class _Cli:
    """`ppp-dist` in a subprocess whose stdout is collected line by line while it runs."""

    def __init__(self, args: list[str], cwd: Path):
        self.lines: list[str] = []
        self.proc = subprocess.Popen([str(PPP_DIST), *args], cwd=cwd, env=_env(), stdout=subprocess.PIPE,
                                     stderr=subprocess.STDOUT, text=True)
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()

    def _read(self) -> None:
        for line in self.proc.stdout:
            self.lines.append(line)

    def line_starting(self, prefix: str, timeout: float) -> str:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            for line in list(self.lines):
                if line.startswith(prefix):
                    return line.strip()
            if self.proc.poll() is not None and not self._reader.is_alive():
                break
            time.sleep(0.1)
        raise AssertionError(f"no line starting with {prefix!r} in\n{self.output}")

    def wait(self, timeout: float) -> int:
        try:
            code = self.proc.wait(timeout=timeout)
        finally:
            if self.proc.poll() is None:
                self.proc.kill()
                self.proc.wait()
        self._reader.join(timeout=30)
        self.proc.stdout.close()
        return code

    @property
    def output(self) -> str:
        return "".join(self.lines)


def _vote_progress(base: str) -> dict | None:
    """The vote row of the dashboard's /individual-progress bokeh document, read with bokeh's own client
    (HTTP, then its websocket): {"all": blocks known to the scheduler, "memory": finished, ...}, or None."""
    from bokeh.client import pull_session
    from bokeh.models import ColumnDataSource

    with pull_session(url=f"{base}/individual-progress") as session:
        for source in session.document.select({"type": ColumnDataSource}):
            names = list(source.data.get("name", []))
            if "vote" in names:
                i = names.index("vote")
                return {key: list(values)[i] for key, values in source.data.items()}
    return None


def _done(progress: dict) -> int:
    return int(str(progress["done"]).split("/")[0])


def test_label_on_two_slurm_worker_jobs_equals_the_local_cluster_and_the_dashboard_shows_it(
        oracle, slurm_jobs, postgres_dsn, tmp_path):
    store, expected = oracle
    exp = tmp_path / "slurm"
    exp.mkdir()
    cli = _Cli(["label", "--exp", str(exp), "--input", store, *_config(store), *SLURM,
                "--set", 'cluster.dashboard_address="127.0.0.1:0"', "--set", 'database.backend="postgres"',
                "--set", f'database.dsn="{postgres_dsn}"'], cwd=tmp_path)
    try:
        link = cli.line_starting("dask dashboard: ", timeout=120).split(": ", 1)[1]
        parts = urlsplit(link)
        assert (parts.scheme, parts.hostname, parts.path) == ("http", "127.0.0.1", "/status"), link
        base = f"http://127.0.0.1:{parts.port}"
        with urllib.request.urlopen(f"{base}/individual-progress", timeout=30) as page:
            html = page.read().decode()
        assert page.status == 200 and "Dask: TaskProgress" in html and "bokeh" in html  # not the "needs bokeh" page
        seen = None
        deadline = time.monotonic() + 300
        while cli.proc.poll() is None and time.monotonic() < deadline:
            progress = _vote_progress(base)
            if progress and progress["all"] == BLOCKS and (progress["processing"] or 0 < _done(progress) < BLOCKS):
                seen = progress  # the blocks are running on the worker jobs
                break
            time.sleep(0.5)
        assert cli.wait(timeout=600) == 0, cli.output[-4000:]
    finally:
        if cli.proc.poll() is None:
            cli.proc.kill()
    out = cli.output
    assert seen is not None, f"the dashboard never showed the vote stage's {BLOCKS} blocks while it ran\n{out}"
    assert seen["erred"] == 0
    print(f"dashboard {link} while vote ran: {seen['done']} blocks done, {seen['processing']} processing")
    assert "slurm cluster: 2 job(s) requested" in out
    assert f"vote: {BLOCKS} blocks | done {BLOCKS} | failed 0" in out and f"paint: {BLOCKS} blocks" in out
    assert _instances(exp) == expected
    # both worker jobs ran blocks, and wrote their output into the experiment's logs/jobs
    logs = sorted((exp / "logs" / "jobs").glob("dask-worker-*.err"))
    assert len(logs) == 2, logs
    assert all("Registered to:" in log.read_text() for log in logs)


def _ledger(db: Path) -> list[tuple[int, str, str]]:
    """(block, status, worker) of the vote stage, read without blocking the writers."""
    if not db.exists():
        return []
    conn = sqlite3.connect(f"file:{db}?mode=ro", uri=True, timeout=30)
    try:
        return conn.execute("SELECT block, status, worker FROM blocks WHERE stage = 'vote'").fetchall()
    except sqlite3.OperationalError:  # the table is not there yet
        return []
    finally:
        conn.close()


def _job_of_worker(exp: Path, worker: str) -> str:
    """The SLURM job whose dask worker listens at ``worker`` (from the jobs' logs)."""
    for log in (exp / "logs" / "jobs").glob("dask-worker-*.err"):
        if re.search(rf"Start worker at:\s+{re.escape(worker)}$", log.read_text(), re.MULTILINE):
            return log.stem.removeprefix("dask-worker-")
    raise AssertionError(f"no worker job log names {worker}")


def test_a_worker_job_cancelled_mid_stage_costs_only_time(oracle, slurm_jobs, tmp_path):
    """scancel of a worker job that is running vote blocks: dask reschedules them on the other job, the run
    completes, and the instances are the same bytes. Also the dashboard link: the dashboard listens on every
    interface here (":0"), so the printed link names this machine, not 127.0.0.1, and answers."""
    store, expected = oracle
    exp = tmp_path / "slurm"
    exp.mkdir()
    cli = _Cli(["label", "--exp", str(exp), "--input", store, *_config(store), *SLURM,
                "--set", 'cluster.dashboard_address=":0"', "--set", "cluster.retries=0"], cwd=tmp_path)
    try:
        link = cli.line_starting("dask dashboard: ", timeout=120).split(": ", 1)[1]
        port = urlsplit(link).port
        try:
            socket.getaddrinfo(socket.gethostname(), None)
            assert urlsplit(link).hostname == socket.gethostname(), link
        except OSError:  # a host name that does not resolve is not printed
            assert urlsplit(link).hostname == "127.0.0.1", link
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/status", timeout=30) as page:
            assert page.status == 200
        # wait until both worker jobs have finished vote blocks, then cancel the job of one of them
        deadline = time.monotonic() + 300
        rows: list = []
        while cli.proc.poll() is None and time.monotonic() < deadline:
            rows = [r for r in _ledger(exp / "graph.sqlite") if r[1] == "done"]
            if len({r[2] for r in rows}) == 2:
                break
            time.sleep(0.1)
        assert len({r[2] for r in rows}) == 2, f"two workers never both ran blocks: {rows}\n{cli.output}"
        victim = _job_of_worker(exp, rows[0][2])
        subprocess.run(["scancel", victim], check=True, timeout=30)
        done_at_cancel = len(rows)
        assert cli.wait(timeout=600) == 0, cli.output[-4000:]
    finally:
        if cli.proc.poll() is None:
            cli.proc.kill()
    out = cli.output
    assert done_at_cancel < BLOCKS, "the stage was over before the job was cancelled"
    assert job_state(victim) == "CANCELLED"
    assert f"vote: {BLOCKS} blocks | done {BLOCKS} | failed 0" in out, out[-4000:]
    final = _ledger(exp / "graph.sqlite")
    survivors = {r[2] for r in final} - {rows[0][2]}
    assert len(final) == BLOCKS and all(r[1] == "done" for r in final)
    assert len(survivors) == 1  # the other job finished the stage
    assert _instances(exp) == expected
    print(f"scancel of job {victim} with {done_at_cancel}/{BLOCKS} vote blocks done: "
          f"{sum(r[2] in survivors for r in final)} blocks by the other job; {out.strip().splitlines()[-4]}")
