"""run_stage: ledger, resume, retries, failed blocks as outcomes, dead workers and a killed driver."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import textwrap
import time
from dataclasses import dataclass
from pathlib import Path

import cloudpickle
import numpy as np
import pytest

from ppp_dist.geometry import BlockSpec, tile
from ppp_dist.io.graph_store import make_edges, make_fragments
from ppp_dist.io.stores import StoreFactory
from ppp_dist.pipeline.runner import StageSummary, format_summary_table, run_stage
from ppp_dist.pipeline.worker import BlockOutput

# worker processes cannot import this test module: ship its functions by value
cloudpickle.register_pickle_by_value(sys.modules[__name__])

REPO = Path(__file__).resolve().parents[1]
BLOCKS = tile((4, 40, 40), (4, 10, 10))  # 16 blocks


def graph_of(block_id: int) -> tuple[np.ndarray, np.ndarray]:
    """Deterministic fragments and owned edges of a block (ids block << 32 | local)."""
    rng = np.random.default_rng(block_id)
    n = 3 + block_id % 4
    ids = (np.int64(block_id) << 32) | np.arange(1, n + 1, dtype=np.int64)
    frags = make_fragments(ids, positions=rng.integers(0, 40, (n, 3)), sizes=rng.integers(1, 99, n))
    nxt = (np.int64(block_id + 1) << 32) | 1
    edges = make_edges(ids, np.append(ids[1:], nxt), rng.random(n), rng.integers(1, 5, n))
    return frags, edges


@dataclass(frozen=True)
class SyntheticStage:
    """A process_block with injectable faults, keyed by marker files so a retry behaves differently."""

    marker_dir: str
    always_fail: tuple[int, ...] = ()
    fail_once: tuple[int, ...] = ()
    exit_once: tuple[int, ...] = ()
    sleep: float = 0.0

    def _first_time(self, kind: str, block_id: int) -> bool:
        marker = Path(self.marker_dir) / f"{kind}-{block_id}"
        if marker.exists():
            return False
        marker.write_text("")
        return True

    def __call__(self, block: BlockSpec) -> BlockOutput:
        b = block.block_id
        time.sleep(self.sleep)
        if b in self.always_fail:
            raise ValueError(f"synthetic failure in block {b}")
        if b in self.fail_once and self._first_time("fail", b):
            raise RuntimeError("flaky storage")
        if b in self.exit_once and self._first_time("exit", b):
            os._exit(1)  # the worker process dies mid-block
        frags, edges = graph_of(b)
        return BlockOutput(frags, edges, {"voxels": block.write_box.size})


def expected_content() -> tuple[list, list]:
    frags = sorted(r for b in BLOCKS for r in graph_of(b.block_id)[0].tolist())
    edges = sorted(r for b in BLOCKS for r in graph_of(b.block_id)[1].tolist())
    return frags, edges


def db_content(factory: StoreFactory) -> tuple[list, list, dict]:
    with factory() as store:
        frags = sorted(r for batch in store.iter_fragments() for r in batch.tolist())
        edges = sorted(r for b in store.iter_edges() for r in zip(b.u.tolist(), b.v.tolist(), b.weight.tolist(),
                                                                  b.count.tolist()))
        ledger = {r.block: (r.status, r.counts) for r in store.ledger_rows("vote")}
    return frags, edges, ledger


def test_local_run_resume_and_redo(database_config, tmp_path):
    factory = StoreFactory(database_config, str(tmp_path))
    stage = SyntheticStage(str(tmp_path))
    first = run_stage(None, "vote", BLOCKS[:10], stage, factory, progress=False)
    assert (first.total, first.done, first.skipped, first.failed, first.attempts) == (10, 10, 0, 0, 10)
    assert first.ok and first.counts["voxels"] == 10 * 400 and first.counts["fragments"] > 0
    again = run_stage(None, "vote", BLOCKS, stage, factory, progress=False)
    assert (again.done, again.skipped, again.attempts) == (16, 10, 6)
    frags, edges, ledger = db_content(factory)
    assert (frags, edges) == expected_content()
    assert {b: s for b, (s, _) in ledger.items()} == {b.block_id: "done" for b in BLOCKS}
    redo = run_stage(None, "vote", BLOCKS, stage, factory, resume=False, progress=False)
    assert (redo.skipped, redo.attempts) == (0, 16) and db_content(factory)[:2] == expected_content()
    with pytest.raises(ValueError, match="block ids are not unique"):
        run_stage(None, "vote", BLOCKS[:2] * 2, stage, factory, progress=False)


def test_failing_block_is_retried_then_reported(client, database_config, tmp_path):
    factory = StoreFactory(database_config, str(tmp_path))
    stage = SyntheticStage(str(tmp_path), always_fail=(5,), fail_once=(2, 9))
    summary = run_stage(client, "vote", BLOCKS, stage, factory, retries=2, progress=False, log_dir=tmp_path / "logs")
    assert (summary.done, summary.failed, summary.failed_blocks) == (15, 1, [5])
    logs = sorted((tmp_path / "logs" / "vote").glob("worker-tcp-127.0.0.1-*.log"))  # one per worker process
    assert 1 <= len(logs) <= 2
    text = "".join(p.read_text() for p in logs)
    assert "vote block 5 attempt 3 failed on tcp://127.0.0.1:" in text and "vote block 0 done in" in text
    assert summary.attempts == 16 + 2 + 2  # block 5 three times, blocks 2 and 9 twice
    assert summary.errors == [(5, "ValueError: synthetic failure in block 5")] and not summary.ok
    with factory() as store:
        rows = {r.block: r for r in store.ledger_rows("vote")}
    assert rows[5].status == "failed" and rows[5].attempts == 3
    assert rows[5].error.startswith("ValueError: synthetic failure in block 5\nTraceback")
    assert rows[2].status == "done" and rows[2].attempts == 2
    text = summary.format()
    assert "vote: 16 blocks | done 15 | failed 1" in text and "failed: 5 (ValueError: synthetic failure" in text
    assert f"logs:   {tmp_path / 'logs' / 'vote'}/worker-*.log" in text
    # the failure is fixed: the same command redoes only block 5
    fixed = run_stage(client, "vote", BLOCKS, SyntheticStage(str(tmp_path)), factory, progress=False)
    assert (fixed.done, fixed.skipped, fixed.failed, fixed.attempts) == (16, 15, 0, 1)
    assert db_content(factory)[:2] == expected_content()


def test_worker_killed_mid_stage_gives_the_same_result(client, database_config, tmp_path):
    factory = StoreFactory(database_config, str(tmp_path))
    stage = SyntheticStage(str(tmp_path), exit_once=(3, 11))
    summary = run_stage(client, "vote", BLOCKS, stage, factory, retries=1, progress=False)
    assert summary.ok and summary.done == 16
    assert (Path(tmp_path) / "exit-3").exists() and (Path(tmp_path) / "exit-11").exists()
    frags, edges, ledger = db_content(factory)
    assert (frags, edges) == expected_content() and len(ledger) == 16


DRIVER = textwrap.dedent("""
    import json, sys, time
    sys.path.insert(0, {tests!r})
    from distributed import Client, LocalCluster
    from ppp_dist.config import DatabaseConfig
    from ppp_dist.io.stores import StoreFactory
    from ppp_dist.pipeline.runner import run_stage
    from test_runner import BLOCKS, SyntheticStage

    if __name__ == "__main__":
        config = DatabaseConfig(**json.loads(sys.argv[1]))
        with LocalCluster(n_workers=2, threads_per_worker=1, processes=False, dashboard_address=None) as cluster, \\
                Client(cluster) as client:
            s = run_stage(client, "vote", BLOCKS, SyntheticStage(sys.argv[2], sleep=float(sys.argv[3])),
                          StoreFactory(config), progress=False)
        print(json.dumps({{"done": s.done, "skipped": s.skipped, "failed": s.failed, "errors": s.errors}}))
""")


def test_killed_driver_resumes_and_matches_an_uninterrupted_run(database_config, tmp_path):
    script = tmp_path / "driver.py"
    script.write_text(DRIVER.format(tests=str(REPO / "tests")))
    config = json.dumps({"backend": database_config.backend, "path": database_config.path,
                         "dsn": database_config.dsn})
    factory = StoreFactory(database_config)
    factory().close()
    cmd = [sys.executable, str(script), config, str(tmp_path)]
    proc = subprocess.Popen(cmd + ["0.25"], cwd=REPO, start_new_session=True, stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL)
    try:
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            with factory() as store:
                if len(store.done_blocks("vote")) >= 4:
                    break
            time.sleep(0.05)
    finally:
        os.killpg(proc.pid, signal.SIGKILL)  # the driver and its in-process workers die at once
        proc.wait(timeout=30)
    with factory() as store:
        done_at_kill = len(store.done_blocks("vote"))
    assert 4 <= done_at_kill < 16, "the driver was killed too late to test resuming"
    rerun = subprocess.run(cmd + ["0"], cwd=REPO, capture_output=True, text=True, timeout=120)
    assert rerun.returncode == 0, rerun.stderr[-2000:]
    result = json.loads(rerun.stdout.strip().splitlines()[-1])
    assert result["done"] == 16, result["errors"]
    assert result["failed"] == 0 and result["skipped"] == done_at_kill  # nothing done is redone
    frags, edges, ledger = db_content(factory)
    assert (frags, edges) == expected_content()  # what an uninterrupted run writes (test_local_run_...)
    assert ledger == {b: ("done", {"fragments": len(graph_of(b)[0]), "edges": len(graph_of(b)[1]), "voxels": 400})
                      for b in range(16)}


def test_summary_table_format():
    rows = [StageSummary("predict", 1536, done=1536, skipped=812, seconds=12.0),
            StageSummary("vote", 1536, done=1529, failed=7, seconds=100.0, failed_blocks=[17],
                         errors=[(17, "BlockError: block 17: too small")])]
    table = format_summary_table(rows).splitlines()
    assert table[0].split() == ["stage", "blocks", "done", "skipped", "failed", "seconds", "blocks/s"]
    assert table[2].split() == ["predict", "1,536", "1,536", "812", "0", "12.0", "60.3"]
    assert table[3].split() == ["vote", "1,536", "1,529", "0", "7", "100.0", "15.3"]
    assert rows[1].format().splitlines()[1] == "  failed: 17 (BlockError: block 17: too small)"
    assert rows[0].format() == "predict: 1,536 blocks | done 1,536 (812 skipped, already done) | failed 0 | 12.0 s"


def test_ledger_view_after_a_stage(database_config, tmp_path):
    import doctest

    from ppp_dist.pipeline import ledger as ledger_module
    from ppp_dist.pipeline.ledger import Ledger

    factory = StoreFactory(database_config, str(tmp_path))
    run_stage(None, "vote", BLOCKS[:4], SyntheticStage(str(tmp_path), always_fail=(2,)), factory, retries=0,
              progress=False, log_dir=tmp_path / "logs")
    (log,) = (tmp_path / "logs" / "vote").iterdir()  # in-process: one log, closed after the stage
    assert "vote block 2 attempt 1 failed" in log.read_text()
    with factory() as store:
        ledger = Ledger(store)
        assert ledger.done_blocks("vote") == {0, 1, 3}
        assert [(r.block, r.error.splitlines()[0]) for r in ledger.failed("vote")] == [
            (2, "ValueError: synthetic failure in block 2")]
        summary = ledger.summary("vote")
        assert (summary["done"], summary["failed"], summary["counts"]["voxels"]) == (3, 1, 1200)
        assert ledger.status_table().splitlines()[2].split()[:3] == ["vote", "3", "1"]
    assert doctest.testmod(ledger_module).failed == 0
