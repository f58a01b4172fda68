"""One run at a time per experiment (issue #15 item 1): real processes on one experiment folder.

The first run is a real ``ppp-dist label`` that holds the experiment while it waits on a dask scheduler without
workers; the second, the same command, is refused in one sentence naming the first, and changes nothing. After
the first is killed (SIGKILL: no clean-up), the next run takes the lock over, says so, and gets the right
instances. Locks of other hosts whose heartbeat stopped, lock files that cannot be read, and lock rows of a
database that a copied folder shares are covered too.
"""

from __future__ import annotations

import hashlib
import json
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from ppp_dist.lock import LOCK_NAME, STALE_S, ExperimentLock, Holder, check_free, read_holder

EXE = Path(sys.executable).with_name("ppp-dist")
SETTINGS = ["--set", "model.patch_shape=[1,5,5]", "--set", "vote.block_shape=[1,32,32]",
            "--set", "cluster.n_workers=1", "--set", "cluster.dashboard_address=:0"]


@pytest.fixture(scope="module")
def prediction(tmp_path_factory) -> Path:
    """The oracle prediction of two squares on a 24 x 24 image (patch shape (1, 5, 5))."""
    import zarr

    from ppp_dist.ops.patches import numinst_onehot, numinst_target, patch_targets

    gt = np.zeros((1, 1, 24, 24), np.uint16)
    gt[0, 0, 2:9, 2:9], gt[0, 0, 12:20, 12:20] = 1, 2
    path = tmp_path_factory.mktemp("lock") / "pred.zarr"
    group = zarr.open_group(path, mode="w")
    group.create_array("patches", data=(patch_targets(gt, (1, 5, 5)) * 255).astype(np.uint8), chunks=(25, 1, 24, 24))
    group.create_array("numinst", data=(numinst_onehot(numinst_target(gt)) * 255).astype(np.uint8),
                       chunks=(3, 1, 24, 24))
    return path


def _run(args: list[str], cwd: Path, **kw) -> subprocess.CompletedProcess:
    env = {k: v for k, v in os.environ.items() if k != "PPP_DIST_DB_DSN"}
    return subprocess.run([str(EXE), *args], cwd=cwd, capture_output=True, text=True, timeout=300, env=env, **kw)


def _hashes(folder: Path) -> dict[str, str]:
    return {str(p.relative_to(folder)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(folder.rglob("*")) if p.is_file() and p.name != LOCK_NAME and "logs" not in p.parts}


def _instances(exp: Path) -> np.ndarray:
    from ppp_dist.io import volumes

    return np.asarray(volumes.open_array(f"{exp}/instances.zarr/instances")[...])


def _new_experiment(tmp_path: Path, prediction: Path) -> Path:
    """An experiment folder made by a first, finished label run (so the second one resumes it with --exp)."""
    done = _run(["label", "--root", "runs", "--input", str(prediction), *SETTINGS], tmp_path)
    assert done.returncode == 0, done.stderr
    (exp,) = (tmp_path / "runs").iterdir()
    assert _instances(exp).max() == 2 and not (exp / LOCK_NAME).exists()  # released at the end
    return exp


def _guarded(exp: Path) -> dict[str, str]:
    """What a refused run could have changed while the first one writes its stages: the saved config (and its
    backups), the id, the secrets and the lock."""
    return {p.name: p.read_text() for p in sorted(exp.glob("*")) if p.is_file() and not p.name.startswith("graph")} | {
        "backups": str(sorted((exp / "backups").glob("*")) if (exp / "backups").exists() else [])}


def test_second_run_is_refused_and_a_killed_run_is_taken_over(tmp_path, prediction):
    from distributed import LocalCluster

    with LocalCluster(n_workers=0, processes=False, dashboard_address=":0", protocol="tcp") as idle:
        # the first run: joins a scheduler without workers, so it holds the experiment until it is killed
        env = {k: v for k, v in os.environ.items() if k != "PPP_DIST_DB_DSN"}
        first = subprocess.Popen([str(EXE), "label", "--root", "runs", "--input", str(prediction), *SETTINGS,
                                  "--scheduler", idle.scheduler_address],
                                 cwd=tmp_path, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env,
                                 start_new_session=True)
        try:
            exp = None
            for line in first.stdout:  # it has taken the lock and the database row once the dashboard shows
                if line.startswith("experiment folder: "):
                    exp = tmp_path / line.split(": ", 1)[1].strip()
                if line.startswith("dask dashboard:"):
                    break
            holder = read_holder(exp / LOCK_NAME)
            assert holder is not None and holder.pid == first.pid and holder.command == "ppp-dist label"
            before = _guarded(exp)

            second = _run(["label", "--exp", str(exp), "--input", str(prediction), *SETTINGS,
                           "--set", "vote.patch_threshold=0.6"], tmp_path)
            assert second.returncode == 2, second.stderr
            (line,) = second.stderr.strip().splitlines()
            assert line.startswith(f"ppp-dist: error: experiment {exp} is in use by process {first.pid} on "
                                   f"{socket.gethostname()} (ppp-dist label, started "), line
            assert "Traceback" not in second.stderr
            assert _guarded(exp) == before  # the config (no backup made), id and lock: untouched
        finally:
            os.killpg(first.pid, signal.SIGKILL)  # no clean-up: the lock file and the database row stay
            first.communicate(timeout=60)
    assert read_holder(exp / LOCK_NAME).pid == first.pid

    third = _run(["label", "--exp", str(exp), "--input", str(prediction), *SETTINGS,
                  "--set", 'cluster.kind="local"'], tmp_path)
    assert third.returncode == 0, third.stderr
    assert (f"took over the lock of process {first.pid} on {socket.gethostname()} (ppp-dist label, started"
            in third.stderr and f"its process {first.pid} on this host is gone" in third.stderr)
    assert f"took over the lock row of process {first.pid}" in third.stderr  # the database row of the killed run
    assert _instances(exp).max() == 2 and not (exp / LOCK_NAME).exists()
    import sqlite3
    with sqlite3.connect(exp / "graph.sqlite") as conn:
        assert conn.execute("SELECT count(*) FROM locks").fetchone() == (0,)
    conn.close()


def _write_lock(exp: Path, **fields) -> Holder:
    holder = Holder(**{"token": "t" * 32, "host": "node-elsewhere", "pid": 4242, "boot": "", "started":
                       "2030-01-01T00:00:00+00:00", "heartbeat": time.time(), "command": "ppp-dist infer",
                       **fields})
    (exp / LOCK_NAME).write_text(json.dumps(holder.__dict__))
    return holder


def test_lock_of_a_live_run_on_another_host_is_refused_then_taken_over_when_its_heartbeat_stops(tmp_path,
                                                                                                    prediction):
    exp = _new_experiment(tmp_path, prediction)
    _write_lock(exp)
    before = _hashes(exp)
    refused = _run(["label", "--exp", str(exp), "--input", str(prediction), *SETTINGS], tmp_path)
    assert refused.returncode == 2 and refused.stderr.count("\n") == 1, refused.stderr
    assert (f"experiment {exp} is in use by process 4242 on node-elsewhere (ppp-dist infer, started "
            "2030-01-01T00:00:00+00:00), alive ") in refused.stderr
    assert _hashes(exp) == before
    _write_lock(exp, heartbeat=time.time() - STALE_S - 60)  # killed on its node: the heartbeat stopped
    taken = _run(["label", "--exp", str(exp), "--input", str(prediction), *SETTINGS], tmp_path)
    assert taken.returncode == 0, taken.stderr
    assert "took over the lock of process 4242 on node-elsewhere (ppp-dist infer" in taken.stderr
    assert "its heartbeat stopped" in taken.stderr and not (exp / LOCK_NAME).exists()


def test_the_database_row_guards_a_copied_folder(tmp_path, prediction):
    """A copy of an experiment (same id) pointed at the same database: the run holding it keeps the row."""
    exp = _new_experiment(tmp_path, prediction)
    database = tmp_path / "shared.sqlite"
    (exp / "graph.sqlite").rename(database)
    lock = ExperimentLock(exp, "ppp-dist label").acquire()
    try:
        from ppp_dist.config import DatabaseConfig
        lock.hold_database(DatabaseConfig(path=str(database)))
        copy = tmp_path / "copy"
        subprocess.run(["cp", "-a", str(exp), str(copy)], check=True)
        (copy / LOCK_NAME).unlink()
        before = _hashes(copy)
        refused = _run(["label", "--exp", str(copy), "--input", str(prediction), *SETTINGS,
                        "--set", f"database.path='{database}'"], tmp_path)
        assert refused.returncode == 2, refused.stderr
        assert f"the run database {database} is in use by process {os.getpid()}" in refused.stderr
        assert _hashes(copy) == before
    finally:
        lock.release()


def test_unreadable_lock_file_is_taken_over_and_heartbeat_renews(tmp_path, caplog):
    (tmp_path / LOCK_NAME).write_text("{not json")
    check_free(tmp_path)  # an unreadable lock holds nothing
    with ExperimentLock(tmp_path, "ppp-dist train").acquire() as lock:
        assert "took over the lock of process 0 on ? (an unreadable lock file" in caplog.text
        first = read_holder(tmp_path / LOCK_NAME)
        assert first.token == lock.holder.token and first.pid == os.getpid()
        time.sleep(0.01)
        lock.renew()
        assert read_holder(tmp_path / LOCK_NAME).heartbeat > first.heartbeat
    assert not (tmp_path / LOCK_NAME).exists()


def test_lock_of_a_dead_process_on_this_host_is_stale(tmp_path):
    dead = subprocess.Popen(["true"])
    dead.wait()
    _write_lock(tmp_path, host=socket.gethostname(), pid=dead.pid)
    assert "is gone" in read_holder(tmp_path / LOCK_NAME).gone()
    check_free(tmp_path)
    _write_lock(tmp_path, host=socket.gethostname(), pid=os.getpid())
    assert read_holder(tmp_path / LOCK_NAME).gone() == ""
    with pytest.raises(Exception, match=f"is in use by process {os.getpid()}"):
        check_free(tmp_path)


def test_status_shows_the_holder_and_reads_only(tmp_path, prediction):
    exp = _new_experiment(tmp_path, prediction)
    _write_lock(exp)
    before = _hashes(exp) | {LOCK_NAME: (exp / LOCK_NAME).read_text()}
    status = _run(["status", str(exp)], tmp_path)
    assert status.returncode == 0, status.stderr
    assert "lock     running: process 4242 on node-elsewhere (ppp-dist infer" in status.stdout
    assert _hashes(exp) | {LOCK_NAME: (exp / LOCK_NAME).read_text()} == before
