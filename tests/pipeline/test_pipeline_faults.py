"""Faults during a whole pipeline run (vote -> agglomerate -> paint), on real processes, zarr and databases.

* a worker process SIGKILLed in the middle of a vote block and of a paint block: the run finishes and the
  labels are the bytes of an uninterrupted run;
* the driver (``ppp-dist label``) SIGKILLed with its cluster after some vote blocks are in the ledger: the
  same command resumes, redoes none of the done blocks, and gives the same bytes (SQLite and PostgreSQL);
* a corrupt chunk of the prediction: the blocks reading it are retried, then reported with their error
  while the others finish (``run_pipeline`` ok False, ``ppp-dist label`` exit 1 naming the block); once the
  chunk is repaired the same call redoes only them;
* an unreachable PostgreSQL server or dask scheduler when resuming a finished experiment (``--exp``):
  ``ppp-dist label`` says so in one sentence, exit 2, and touches no file of it (a new experiment,
  ``--root``, is covered by ``tests/bad_input/test_bad_input_sweep.py``).

The runner-level versions of these faults (synthetic blocks) are in ``tests/test_runner.py``.
"""

from __future__ import annotations

import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

import cloudpickle
import numpy as np
import pytest
from _pipeline_helpers import whole_volume, write_oracle
from distributed.diagnostics.plugin import WorkerPlugin

from ppp_dist.config import DatabaseConfig, config_from_table, save_config
from ppp_dist.data import crossing_worms_2d
from ppp_dist.io.stores import StoreFactory
from ppp_dist.io.volumes import open_array
from ppp_dist.pipeline.infer import run_pipeline
from ppp_dist.pipeline.runner import worker_log_path
from ppp_dist.pipeline.settings import assembly_settings

# the kill plugin is defined here: workers cannot import this module, ship it by value
cloudpickle.register_pickle_by_value(sys.modules[__name__])

REPO = Path(__file__).resolve().parents[2]
PPP_DIST = Path(sys.executable).with_name("ppp-dist")
PS = (1, 5, 5)  # h = 2: vote halo 22, paint halo 2
BLOCK = (1, 32, 32)
VOLUME = (128, 128)  # 16 blocks
N_BLOCKS = 16
CHUNKS = (1, 8, 8)
TABLE = {"model": {"patch_shape": list(PS)}, "vote": {"block_shape": list(BLOCK)}}
CONFIG_TOML = f"""
[model]
patch_shape = {list(PS)}

[vote]
block_shape = {list(BLOCK)}

[cluster]
n_workers = 1
threads_per_worker = 1
dashboard_address = ":0"
"""


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _labels(path: str | Path) -> np.ndarray:
    return np.asarray(open_array(str(path))[...])


def _graph(factory: StoreFactory) -> list:
    """The contracted graph rows of every vote block."""
    with factory() as store:
        return [{t: r.tolist() for t, r in store.block_rows(b).items()} for b in range(N_BLOCKS)]


def _ledger(factory: StoreFactory, stage: str) -> dict:
    with factory() as store:
        return {r.block: r for r in store.ledger_rows(stage)}


@pytest.fixture(scope="module")
def oracle(tmp_path_factory):
    """The oracle prediction group and the labels + graph of an uninterrupted in-process run."""
    root = tmp_path_factory.mktemp("oracle")
    inst = crossing_worms_2d(shape=VOLUME, n_worms=5, width=(5, 7), seed=11).instances
    group = write_oracle(root / "pred.zarr", inst, PS, CHUNKS)
    cfg = config_from_table(TABLE)
    ref = run_pipeline(cfg, root / "reference", client=None, prediction=group)
    labels = _labels(ref.output)
    assert ref.ok and ref.stages["vote"]["blocks"] == N_BLOCKS and ref.instances >= 4
    np.testing.assert_array_equal(labels, whole_volume(group, assembly_settings(cfg)))
    return {"group": group, "labels": labels, "graph": _graph(StoreFactory(cfg.database, str(root / "reference"))),
            "instances": ref.instances}


# ---------------------------------------------------------------------------------------------------------
# 1. a worker process killed in the middle of a block


class KillMidBlock(WorkerPlugin):
    """SIGKILL this worker process while it runs a block of one of ``stages``, once per stage (marker files).

    A worker arms itself at its ``after``-th task of a stage (so blocks of that stage are already done)
    and kills itself ``delay`` seconds into the task if the task is still executing then (otherwise it
    re-arms on its next task). The marker ``killed-<stage>`` holds ``pid key worker-address``.
    """

    name = "ppp-test-kill-mid-block"

    def __init__(self, marker_dir: str, stages: tuple[str, ...], after: int = 2, delay: float = 0.01) -> None:
        self.marker_dir, self.stages, self.after, self.delay = marker_dir, stages, after, delay
        self.seen: dict[str, int] = {}
        self.running: str | None = None
        self.address = ""

    def setup(self, worker) -> None:
        self.address = str(worker.address)

    def transition(self, key, start, finish, **kwargs) -> None:
        key = str(key)
        if start == "executing":
            self.running = None
        if finish != "executing":
            return
        self.running = key
        stage = key.split("-", 1)[0]
        if stage not in self.stages or (Path(self.marker_dir) / f"killed-{stage}").exists():
            return
        self.seen[stage] = self.seen.get(stage, 0) + 1
        if self.seen[stage] >= self.after:
            threading.Timer(self.delay, self._kill, (stage, key)).start()

    def _kill(self, stage: str, key: str) -> None:
        if self.running != key:  # the block finished first: try the next one
            return
        try:
            fd = os.open(Path(self.marker_dir) / f"killed-{stage}", os.O_CREAT | os.O_EXCL | os.O_WRONLY)
        except FileExistsError:  # another worker got there first
            return
        os.write(fd, f"{os.getpid()} {key} {self.address}".encode())
        os.close(fd)
        os.kill(os.getpid(), signal.SIGKILL)


def test_worker_killed_mid_vote_and_mid_paint_gives_the_uninterrupted_bytes(client, oracle, tmp_path):
    cfg = config_from_table(TABLE)
    client.wait_for_workers(2, timeout=60)
    client.register_plugin(KillMidBlock(str(tmp_path), ("vote", "paint")))
    try:
        res = run_pipeline(cfg, tmp_path / "exp", client=client, prediction=oracle["group"])
    finally:
        client.unregister_worker_plugin(KillMidBlock.name)
    killed = {}
    for stage in ("vote", "paint"):
        marker = tmp_path / f"killed-{stage}"
        assert marker.is_file(), f"no worker was killed during {stage}: the test did not test anything"
        pid, key, address = marker.read_text().split()
        killed[stage] = (int(pid), key, address)
    for pid, _, _ in killed.values():
        with pytest.raises(ProcessLookupError):  # really dead (the nanny reaped it and started a new one)
            os.kill(pid, 0)
    client.wait_for_workers(2, timeout=60)
    assert not {pid for pid, _, _ in killed.values()} & set(client.run(os.getpid).values())

    assert res.ok, {k: v.get("format") for k, v in res.stages.items()}
    for stage in ("vote", "paint"):
        s = res.stages[stage]
        assert (s["blocks"], s["done"], s["skipped"], s["failed"]) == (N_BLOCKS, N_BLOCKS, 0, 0)
    assert res.instances == oracle["instances"]
    out = _labels(res.output)
    assert out.dtype == oracle["labels"].dtype and out.tobytes() == oracle["labels"].tobytes()
    factory = StoreFactory(cfg.database, str(tmp_path / "exp"))
    assert _graph(factory) == oracle["graph"]  # no stale, duplicate or missing rows from the killed attempt
    for stage, (_, key, address) in killed.items():
        # mid-stage: the killed worker had finished blocks of this stage before it died
        log = worker_log_path(tmp_path / "exp" / "logs", stage, address).read_text()
        assert re.search(rf"{stage} block \d+ done in ", log), log
        rows = _ledger(factory, stage)
        assert sorted(rows) == list(range(N_BLOCKS)) and {r.status for r in rows.values()} == {"done"}
        block = int(key.split("-")[1])
        # the block was redone: its done row comes from the attempt dask rescheduled on another worker
        assert rows[block].worker and rows[block].worker != address


# ---------------------------------------------------------------------------------------------------------
# 2. the driver killed mid-stage, then the same command again


def _alive_in_group(pgid: int) -> list[int]:
    """Processes of the process group that are still running (zombies excluded)."""
    alive = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
        except OSError:
            continue
        fields = stat.rsplit(")", 1)[1].split()
        if int(fields[2]) == pgid and fields[0] != "Z":
            alive.append(int(entry.name))
    return alive


@pytest.mark.parametrize("backend, stage", [("sqlite", "vote"), ("sqlite", "paint"),
                                            pytest.param("postgres", "vote", marks=pytest.mark.postgres)])
def test_killed_label_driver_resumes_with_the_same_command(backend, stage, oracle, tmp_path, request):
    """``ppp-dist label`` SIGKILLed (with its whole process group) once ``stage`` has 3 blocks in the ledger;
    the same command then skips exactly the blocks done before the kill and writes the uninterrupted bytes."""
    database = DatabaseConfig(backend="sqlite")  # default: <exp>/graph.sqlite
    text = CONFIG_TOML
    if backend == "postgres":
        database = DatabaseConfig(backend="postgres", dsn=request.getfixturevalue("postgres_dsn"))
        text += f'\n[database]\nbackend = "postgres"\ndsn = "{database.dsn}"\n'
    (tmp_path / "label.toml").write_text(text)
    exp = tmp_path / "exp"
    exp.mkdir()
    factory = StoreFactory(database, str(exp))
    factory().close()  # the schema exists before the driver and this watcher both open it
    cmd = [str(PPP_DIST), "label", "--exp", str(exp), "--config", str(tmp_path / "label.toml"),
           "--input", oracle["group"]]
    proc = subprocess.Popen(cmd, cwd=tmp_path, start_new_session=True, stdout=subprocess.DEVNULL,
                            stderr=subprocess.PIPE, text=True)
    try:
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline and proc.poll() is None:
            with factory() as store:
                if len(store.done_blocks(stage)) >= 3:
                    break
            time.sleep(0.01)
    finally:
        os.killpg(proc.pid, signal.SIGKILL)  # the driver and its LocalCluster (nannies, workers) at once
        proc.wait(timeout=30)
        stderr = proc.stderr.read()
        proc.stderr.close()
    assert proc.returncode == -signal.SIGKILL, f"the driver ended by itself: {stderr[-3000:]}"
    deadline = time.monotonic() + 10
    while _alive_in_group(proc.pid) and time.monotonic() < deadline:
        time.sleep(0.1)
    assert not _alive_in_group(proc.pid), "a worker of the killed driver is still running"
    at_kill = {s: _ledger(factory, s) for s in ("vote", "paint")}
    done_at_kill = {b for b, r in at_kill[stage].items() if r.status == "done"}
    assert 3 <= len(done_at_kill) < N_BLOCKS, "the driver was killed too late to test resuming"
    if stage == "vote":
        assert not at_kill["paint"]
    else:
        assert sorted(at_kill["vote"]) == list(range(N_BLOCKS))

    rerun = subprocess.run(cmd, cwd=tmp_path, capture_output=True, text=True, timeout=300)
    assert rerun.returncode == 0, rerun.stderr[-3000:]
    skipped = {"vote": len(done_at_kill) if stage == "vote" else N_BLOCKS,
               "paint": len(done_at_kill) if stage == "paint" else 0}
    for s in ("vote", "paint"):
        done = (f"{s}: {N_BLOCKS} blocks | done {N_BLOCKS}"
                + (f" ({skipped[s]} skipped, already done)" if skipped[s] else "") + " | failed 0")
        assert done in rerun.stdout, rerun.stdout
    assert ("agglomerate: skipped, already done" in rerun.stdout) == (stage == "paint"), rerun.stdout
    assert f"label: {oracle['instances']} instances (blockwise)" in rerun.stdout
    for s in ("vote", "paint"):
        after = _ledger(factory, s)
        assert sorted(after) == list(range(N_BLOCKS)) and {r.status for r in after.values()} == {"done"}
    after = _ledger(factory, stage)
    for b in done_at_kill:  # not redone: the very same ledger rows (time stamp, worker, seconds)
        assert after[b] == at_kill[stage][b]
    assert _graph(factory) == oracle["graph"]
    out = _labels(exp / "instances.zarr" / "instances")
    assert out.dtype == oracle["labels"].dtype and out.tobytes() == oracle["labels"].tobytes()
    assert not (exp / "backups").exists()  # the same command: the saved config was not replaced


# ---------------------------------------------------------------------------------------------------------
# 3. a block that keeps failing: retried, reported, the others finish


def _corrupt_prediction(oracle, where: Path) -> tuple[str, Path, bytes, list[int]]:
    """A copy of the oracle group with one stored patches chunk overwritten by garbage.

    The chunk is the one the fewest vote blocks read (a corner one). Returns (group, chunk file, its good
    bytes, the ids of the vote blocks whose read box (core + 22) covers it, i.e. the blocks that must fail).
    """
    from ppp_dist.geometry import Box
    from ppp_dist.pipeline.vote import vote_grid

    group = where / "pred.zarr"
    shutil.copytree(oracle["group"], group)
    grid = list(vote_grid((1,) + VOLUME, BLOCK, assembly_settings(config_from_table(TABLE))))
    candidates = []
    for chunk in (group / "patches" / "c" / "0" / "0").glob("*/*"):  # (all patches, z 0, y chunk, x chunk)
        cy, cx = int(chunk.parent.name), int(chunk.name)
        box = Box((0, cy * CHUNKS[1], cx * CHUNKS[2]), (1, (cy + 1) * CHUNKS[1], (cx + 1) * CHUNKS[2]))
        readers = [b.block_id for b in grid if not b.read_box.intersect(box).empty]
        candidates.append((len(readers), cy, cx, chunk, readers))
    _, _, _, chunk, readers = min(candidates, key=lambda c: c[:3])
    good = chunk.read_bytes()
    chunk.write_bytes(b"not a blosc frame" * 8)
    return str(group), chunk, good, readers


# what zarr raises reading the garbage chunk (a wrapper naming the array may come first)
BLOSC = "error during blosc decompression"


def test_corrupt_prediction_chunk_fails_its_blocks_after_retries_and_the_rest_finish(client, oracle, tmp_path):
    cfg = config_from_table(TABLE)
    group, chunk, good, failing = _corrupt_prediction(oracle, tmp_path)
    assert 1 <= len(failing) <= 2, failing  # a corner chunk: read by one block (two at most)
    exp = tmp_path / "exp"
    res = run_pipeline(cfg, exp, client=client, prediction=group)
    assert res.ok is False
    vote = res.stages["vote"]
    assert (vote["done"], vote["failed"], vote["ok"]) == (N_BLOCKS - len(failing), len(failing), False)
    assert [b for b, _ in vote["errors"]] == failing and all(BLOSC in e for _, e in vote["errors"])
    assert re.search(rf"^  failed: {failing[0]} \(\w+: .*{BLOSC}", vote["format"], re.M), vote["format"]
    assert set(res.stages) == {"vote"}  # nothing downstream of a failed stage ran
    assert not (exp / "instances.zarr").exists()
    factory = StoreFactory(cfg.database, str(exp))
    rows = _ledger(factory, "vote")
    for b in failing:  # every attempt spent, the error and its traceback kept
        assert rows[b].status == "failed" and rows[b].attempts == cfg.cluster.retries + 1
        assert BLOSC in rows[b].error.splitlines()[0] and "\nTraceback" in rows[b].error
    assert {b for b, r in rows.items() if r.status == "done"} == set(range(N_BLOCKS)) - set(failing)
    logs = "".join(p.read_text() for p in (exp / "logs" / "vote").glob("worker-*.log"))
    for b in failing:
        assert f"vote block {b} attempt {cfg.cluster.retries + 1} failed on tcp://127.0.0.1:" in logs

    # the chunk repaired: the same call redoes only the failed blocks and gives the uninterrupted bytes
    chunk.write_bytes(good)
    again = run_pipeline(cfg, exp, client=client, prediction=group)
    assert again.ok
    vote = again.stages["vote"]
    assert (vote["done"], vote["skipped"], vote["failed"]) == (N_BLOCKS, N_BLOCKS - len(failing), 0)
    assert _labels(again.output).tobytes() == oracle["labels"].tobytes()
    assert _graph(factory) == oracle["graph"]


def _label_cli(*args: str, timeout: float = 300) -> subprocess.CompletedProcess:
    return subprocess.run([str(PPP_DIST), "label", *args], capture_output=True, text=True, timeout=timeout,
                          cwd=REPO)


def test_label_cli_with_a_failing_block_exits_1_naming_it(oracle, tmp_path):
    group, _, _, failing = _corrupt_prediction(oracle, tmp_path)
    (tmp_path / "label.toml").write_text(CONFIG_TOML)
    root = tmp_path / "runs"
    done = _label_cli("--root", str(root), "--config", str(tmp_path / "label.toml"), "--input", group,
                      "--set", "cluster.retries=1")
    assert done.returncode == 1, done.stderr[-3000:]
    assert "Traceback" not in done.stderr, done.stderr[-3000:]
    assert (f"vote: {N_BLOCKS} blocks | done {N_BLOCKS - len(failing)} | failed {len(failing)}"
            in done.stdout), done.stdout
    assert re.search(rf"^  failed: {failing[0]} \(\w+: .*{BLOSC}", done.stdout, re.M), done.stdout
    assert "running the same command again retries only the failed blocks" in done.stdout
    assert "ppp-dist: label finished with failed blocks" in done.stderr
    (exp,) = root.iterdir()
    rows = _ledger(StoreFactory(DatabaseConfig(), str(exp)), "vote")
    assert [b for b, r in sorted(rows.items()) if r.status == "failed"] == failing
    assert all(rows[b].attempts == 2 for b in failing)  # retries = 1


# ---------------------------------------------------------------------------------------------------------
# 4. unreachable services when resuming a finished experiment: one sentence, exit 2, nothing touched
# (tests/bad_input/test_bad_input_sweep.py covers a new experiment, --root: rows *-unreachable)


def _tree(folder: Path) -> dict[str, tuple[str, int]]:
    """Every file under ``folder`` with its content hash and modification time."""
    import hashlib

    return {str(p.relative_to(folder)): (hashlib.sha256(p.read_bytes()).hexdigest() if p.is_file() else "dir",
                                         p.stat().st_mtime_ns) for p in folder.rglob("*")}


@pytest.mark.parametrize("service", ["postgres", "scheduler"])
def test_resuming_with_an_unreachable_service_is_one_sentence_and_touches_nothing(service, oracle, tmp_path):
    """``ppp-dist label --exp`` of a finished experiment (graph.sqlite, labels, work files) whose database
    (PostgreSQL DSN on a closed port, in the experiment's config) or scheduler (``--scheduler`` on a closed
    port) cannot be reached: exit 2, the one sentence naming it (no password, no traceback, no log lines),
    and not one file of the experiment created, changed or touched (not its config, log or database)."""
    port = _free_port()
    exp = tmp_path / "exp"
    shutil.copytree(Path(oracle["group"]).parent / "reference", exp)
    table = {**TABLE, "cluster": {"n_workers": 1, "dashboard_address": ":0"}}
    where = ["--exp", str(exp), "--input", oracle["group"]]
    if service == "postgres":
        table["database"] = {"backend": "postgres", "dsn": f"postgresql://ppp:secret@127.0.0.1:{port}/nothing"}
        message = f"cannot reach PostgreSQL at postgresql://ppp@127.0.0.1:{port}/nothing ("
    else:
        where += ["--scheduler", f"tcp://127.0.0.1:{port}"]
        message = f"cannot reach the dask scheduler at tcp://127.0.0.1:{port} ("
    save_config(config_from_table(table), exp / "config.toml")
    assert {"graph.sqlite", "instances.zarr", "pipeline", "logs", "config.toml"} <= {p.name for p in exp.iterdir()}
    before = _tree(exp)
    started = time.monotonic()
    done = _label_cli(*where, timeout=120)
    assert time.monotonic() - started < 60
    assert done.returncode == 2, (done.stdout[-2000:], done.stderr[-3000:])
    assert "Traceback" not in done.stderr and "secret" not in done.stdout + done.stderr, done.stderr[-3000:]
    lines = [line for line in done.stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith(f"ppp-dist: error: {message}"), done.stderr[-3000:]
    assert _tree(exp) == before  # no new config or backup, no log line, the database and labels untouched
