"""Run one blockwise stage on dask: one task per block, a ledger in the graph DB, retries, resume.

A stage (``pipeline/{predict,vote,paint,relabel}.py``) is a picklable object with ``name``, ``resources``,
``grid()`` (its blocks), ``params()`` (what its outputs depend on: a change redoes every block),
``prepare(fresh)`` (before the blocks, on the driver), ``forget(store)`` (drop what an earlier run left),
``process_block(block)`` and ``finalize()`` (after the blocks, on the driver). :class:`StageRunner` owns
staleness and resume for a sequence of stages; :func:`run_stage` runs the blocks of one.

The contract for ``process_block``::

    def process_block(block: BlockSpec) -> BlockOutput | dict:
        # runs on a worker; reads its inputs (zarr, with halo) itself, writes array outputs itself
        # (chunk-aligned write box only), and returns either
        #   BlockOutput(fragments, edges, counts)  -> the runner writes fragments + edges + ledger row
        #                                             in ONE transaction (GraphStore.write_block)
        #   {"voxels": 123, ...}                    -> the runner marks the block done with these counts
        # It must be deterministic (seed any randomness by block id) and idempotent (a re-run overwrites
        # the same chunks / rows). Raise to fail the block; BlockError for a message that names it.

``process_block`` must be picklable (a module-level function or a ``functools.partial`` / frozen
dataclass of small config) and is shipped with every task next to the ``BlockSpec`` — never arrays.
Expensive objects (models, DB connections) are built once per worker process: the graph store through
:func:`worker_store`, other objects through ``functools.lru_cache`` in the stage's module.

:func:`run_stage` loads the done set with one query, submits the missing blocks with
``client.map(..., key=f"{stage}-{block_id}", pure=False)``, and drives a tqdm bar from
``distributed.as_completed``. A block that raises is caught at the block boundary (the task still
succeeds, carrying the error), recorded in the ledger as ``failed`` and resubmitted until ``retries`` are
spent; a worker that dies is handled by dask (the task is rescheduled; after
``distributed.scheduler.allowed-failures`` deaths the driver sees ``KilledWorker`` and counts an attempt).
A failed block is an outcome, not a crash: :class:`StageSummary` reports it and the caller exits 1.
``client=None`` runs every block in this process, in order (tests, ``pdb``, the in-process label); with
``fail_fast`` the first failing block raises its error there, after its ledger row is written.
"""

from __future__ import annotations

import logging
import os
import re
import socket
import time
import traceback
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

from distributed.diagnostics.plugin import WorkerPlugin

from ppp_dist.geometry import BlockSpec
from ppp_dist.io.graph_store import GraphStore
from ppp_dist.logs import LogFile, RedactingFormatter
from ppp_dist.pipeline.ledger import text_table
from ppp_dist.pipeline.worker import BlockOutput, close_worker_stores, drop_worker_store, worker_store

logger = logging.getLogger(__name__)

MAX_ERRORS_SHOWN = 10
_PLUGIN_CLIENTS: set[str] = set()  # clients whose workers have the StoreCachePlugin


class StoreCachePlugin(WorkerPlugin):
    """Worker plugin closing the cached DB connections when a worker shuts down.

    Registered by :func:`run_stage` (``client.register_plugin``).
    """

    name = "ppp-dist-store-cache"

    def setup(self, worker: Any) -> None:
        pass

    def teardown(self, worker: Any) -> None:
        close_worker_stores()
        close_worker_logs()


def _worker_name() -> str:
    try:
        from distributed import get_worker

        return str(get_worker().address)
    except (ImportError, ValueError):
        return f"{socket.gethostname()}:{os.getpid()}"


_LOG_HANDLERS: dict[str, logging.Handler] = {}
_LOG_FORMAT = "%(asctime)s %(levelname)-7s %(name)s: %(message)s"


def worker_log_path(log_dir: str | os.PathLike, stage: str, worker: str) -> Path:
    """``<log_dir>/<stage>/worker-<name>.log`` with the worker address made file-name safe."""
    safe = re.sub(r"[^A-Za-z0-9_.-]+", "-", worker).strip("-") or "local"
    return Path(log_dir) / stage / f"worker-{safe}.log"


def _ensure_worker_log(log_dir: str | None, stage: str, worker: str) -> None:
    """Attach (once per process) a file handler for this stage's worker log to the ``ppp_dist`` logger."""
    if not log_dir:
        return
    path = worker_log_path(log_dir, stage, worker)
    if str(path) in _LOG_HANDLERS:
        return
    path.parent.mkdir(parents=True, exist_ok=True)
    handler = LogFile(path)
    handler.setLevel(logging.INFO)
    handler.setFormatter(RedactingFormatter(_LOG_FORMAT))
    package = logging.getLogger("ppp_dist")
    if package.getEffectiveLevel() > logging.INFO:
        package.setLevel(logging.INFO)
    package.addHandler(handler)
    _LOG_HANDLERS[str(path)] = handler


def close_worker_logs() -> None:
    """Detach and close the worker log handlers of this process."""
    package = logging.getLogger("ppp_dist")
    while _LOG_HANDLERS:
        _, handler = _LOG_HANDLERS.popitem()
        package.removeHandler(handler)
        handler.close()


# ---------------------------------------------------------------------------------------------------------
# The task


def _short_error(err: BaseException) -> str:
    text = str(err).strip().splitlines()[0] if str(err).strip() else ""
    return f"{type(err).__name__}: {text}" if text else type(err).__name__


def run_block(stage: str, block: BlockSpec, process_block: Callable[[BlockSpec], Any],
              store_factory: Callable[[], GraphStore], attempt: int = 1,
              log_dir: str | None = None, reraise: bool = False) -> dict[str, Any]:
    """Process one block and record the outcome in the ledger; raises a block's error only with ``reraise``
    (after recording it).

    Returns ``{"block", "status": "done"|"failed", "seconds", "worker", "counts" | "error", "traceback"}``.
    With ``log_dir``, this process's ``ppp_dist`` log also goes to ``<log_dir>/<stage>/worker-<name>.log``.
    """
    started = time.perf_counter()
    worker = _worker_name()
    _ensure_worker_log(log_dir, stage, worker)
    result: dict[str, Any] = {"block": block.block_id, "attempt": attempt, "worker": worker}
    try:
        out = process_block(block)
        seconds = time.perf_counter() - started
        store = worker_store(store_factory)
        if isinstance(out, BlockOutput):
            store.write_block(stage, block.block_id, out.fragments, out.edges, out.counts, clusters=out.clusters,
                              patch_map=out.patch_map, links=out.links, seconds=seconds, worker=worker,
                              attempts=attempt)
            counts = {**{name: _length(t) for name, t in out.tables().items()}, **out.counts}
        else:
            counts = dict(out or {})
            store.mark_done(stage, block.block_id, counts, seconds=seconds, worker=worker, attempts=attempt)
        result.update(status="done", seconds=seconds, counts=counts)
        logger.info("%s block %d done in %.2f s (attempt %d)", stage, block.block_id, seconds, attempt)
        return result
    except Exception as err:
        seconds = time.perf_counter() - started
        error = _short_error(err)
        tb = traceback.format_exc(limit=-8)
        logger.warning("%s block %d attempt %d failed on %s: %s", stage, block.block_id, attempt, worker, error)
        result.update(status="failed", seconds=seconds, error=error, traceback=tb)
        try:
            if _is_store_error(err):
                drop_worker_store(store_factory)
            worker_store(store_factory).mark_failed(stage, block.block_id, f"{error}\n{tb}", attempt,
                                                    seconds=seconds, worker=worker)
        except Exception as ledger_err:  # the driver records it instead
            drop_worker_store(store_factory)
            result["ledger_error"] = _short_error(ledger_err)
        if reraise:
            raise
        return result


def _block_task(block: BlockSpec, stage: str, process_block: Callable[[BlockSpec], Any],
                store_factory: Callable[[], GraphStore], attempt: int,
                log_dir: str | None = None) -> dict[str, Any]:
    """:func:`run_block` with the block first, as ``client.map`` passes it."""
    return run_block(stage, block, process_block, store_factory, attempt, log_dir)


def _length(table: Any) -> int:
    if table is None:
        return 0
    if isinstance(table, dict):
        first = next(iter(table.values()), ())
        return len(first)
    return len(table)


def _is_store_error(err: BaseException) -> bool:
    from ppp_dist.errors import DatabaseError

    module = type(err).__module__ or ""
    return isinstance(err, DatabaseError) or module.startswith(("sqlite3", "psycopg2"))


# ---------------------------------------------------------------------------------------------------------
# The driver


@dataclass
class StageSummary:
    """Outcome of one :func:`run_stage` call."""

    stage: str
    total: int  # blocks asked for
    done: int = 0  # done now or before (includes skipped)
    skipped: int = 0  # done before this run (resume)
    failed: int = 0  # failed after every attempt
    seconds: float = 0.0  # wall time of the stage
    block_seconds: float = 0.0  # sum of the blocks' own times in this run
    attempts: int = 0  # tasks run in this run (first tries + retries)
    failed_blocks: list[int] = field(default_factory=list)
    errors: list[tuple[int, str]] = field(default_factory=list)  # (block, error), the first MAX_ERRORS_SHOWN
    counts: dict[str, float] = field(default_factory=dict)  # summed numeric counts of blocks done in this run
    log_dir: str = ""  # where the worker logs of this stage are, if any

    @property
    def ok(self) -> bool:
        return self.failed == 0 and self.done == self.total

    def format(self) -> str:
        """The end-of-stage summary (STYLE item 37)."""
        line = (f"{self.stage}: {self.total:,} blocks | done {self.done:,}"
                + (f" ({self.skipped:,} skipped, already done)" if self.skipped else "")
                + f" | failed {self.failed:,} | {self.seconds:.1f} s")
        lines = [line]
        if self.errors:
            shown = ", ".join(f"{b} ({e})" for b, e in self.errors[:MAX_ERRORS_SHOWN])
            more = f"   [first {MAX_ERRORS_SHOWN} shown]" if self.failed > MAX_ERRORS_SHOWN else ""
            lines.append(f"  failed: {shown}{more}")
            if self.log_dir:
                lines.append(f"  logs:   {Path(self.log_dir) / self.stage}/worker-*.log")
            lines.append("  the ledger (blocks table) has each traceback; running the same command again retries "
                         "only the failed blocks")
        return "\n".join(lines)


def format_summary_table(summaries: Iterable[StageSummary]) -> str:
    """A table of several stages' summaries, one row each."""
    header = ("stage", "blocks", "done", "skipped", "failed", "seconds", "blocks/s")
    rows = [header]
    for s in summaries:
        ran = s.done - s.skipped
        rate = f"{ran / s.seconds:.1f}" if s.seconds > 0 and ran else "-"
        rows.append((s.stage, f"{s.total:,}", f"{s.done:,}", f"{s.skipped:,}", f"{s.failed:,}", f"{s.seconds:.1f}",
                     rate))
    return text_table(rows)


def _progress(total: int, stage: str, enabled: bool) -> Any:
    from tqdm.auto import tqdm

    return tqdm(total=total, desc=stage, unit="block", disable=not enabled, dynamic_ncols=True, leave=True)


def run_stage(client: Any, stage_name: str, blocks: Sequence[BlockSpec],
              process_block: Callable[[BlockSpec], Any], store_factory: Callable[[], GraphStore], *,
              retries: int = 2, resume: bool = True, progress: bool = True,
              resources: dict[str, float] | None = None, log_dir: str | os.PathLike | None = None,
              fail_fast: bool = False) -> StageSummary:
    """Run ``process_block`` on every block not yet done, on ``client``'s cluster (``None``: in-process).

    Parameters
    ----------
    client : distributed.Client or None
    stage_name : str
        Ledger stage and task key prefix.
    blocks : list of BlockSpec
        Block ids must be unique.
    process_block : callable
        See the module docstring for the contract.
    store_factory : callable
        Picklable zero-argument callable returning the :class:`GraphStore` (e.g. ``StoreFactory``); the
        driver uses one store, every worker process caches its own.
    retries : int
        Extra attempts per failed block.
    resume : bool
        Skip blocks the ledger marks done; ``False`` forgets their rows first and redoes everything.
    resources : dict, optional
        dask worker resources per task, e.g. ``{"GPU": 1}``.
    log_dir : path, optional
        Every worker process also logs to ``<log_dir>/<stage>/worker-<address>.log`` (e.g. ``run_dir/logs``;
        must be a folder the workers can write to).
    fail_fast : bool
        In-process only (``client=None``): the first block that fails raises its error, with no retry.

    Returns
    -------
    StageSummary
    """
    if retries < 0:
        raise ValueError(f"retries must be >= 0, got {retries}")
    if fail_fast and client is not None:
        raise ValueError("fail_fast runs in this process only (client=None)")
    ids = [b.block_id for b in blocks]
    if len(set(ids)) != len(ids):
        raise ValueError(f"stage {stage_name}: block ids are not unique")
    started = time.perf_counter()
    log_dir_s = str(log_dir) if log_dir else None
    summary = StageSummary(stage_name, len(blocks), log_dir=log_dir_s or "")
    store = store_factory()
    try:
        if resume:
            done_before = store.done_blocks(stage_name)
        else:
            store.reset_blocks(stage_name, ids)
            done_before = set()
        todo = [b for b in blocks if b.block_id not in done_before]
        summary.skipped = summary.done = len(blocks) - len(todo)
        if summary.skipped:
            logger.info("%s: %d of %d blocks already done, skipped", stage_name, summary.skipped, len(blocks))
        bar = _progress(len(todo), stage_name, progress)
        try:
            if client is None:
                _run_local(stage_name, todo, process_block, store_factory, retries, summary, store, bar, log_dir_s,
                           fail_fast)
            else:
                _run_distributed(client, stage_name, todo, process_block, store_factory, retries, summary, store,
                                 bar, resources, log_dir_s)
        finally:
            bar.close()
    finally:
        store.close()
    summary.failed_blocks.sort()
    summary.errors.sort()
    summary.seconds = time.perf_counter() - started
    (logger.info if summary.ok else logger.warning)("%s", summary.format())
    return summary


def _record(summary: StageSummary, result: dict[str, Any], retries: int, store: GraphStore, bar: Any) -> bool:
    """Account one finished attempt; True if the block should be retried."""
    summary.attempts += 1
    summary.block_seconds += float(result.get("seconds", 0.0))
    if result["status"] == "done":
        summary.done += 1
        for key, value in result.get("counts", {}).items():
            if isinstance(value, (int, float)) and not isinstance(value, bool):
                summary.counts[key] = summary.counts.get(key, 0) + value
        bar.update(1)
        return False
    if "ledger_error" in result:  # the worker could not write the ledger row: do it here
        try:
            store.mark_failed(summary.stage, result["block"], f"{result['error']}\n{result.get('traceback', '')}",
                              result["attempt"], seconds=float(result.get("seconds", 0.0)),
                              worker=result.get("worker", ""))
        except Exception as err:
            logger.error("%s block %d: cannot record the failure in the ledger: %s", summary.stage,
                         result["block"], _short_error(err))
    if result["attempt"] <= retries:
        logger.info("%s block %d: retrying (attempt %d of %d) after %s", summary.stage, result["block"],
                    result["attempt"] + 1, retries + 1, result["error"])
        return True
    summary.failed += 1
    summary.failed_blocks.append(result["block"])
    if len(summary.errors) < MAX_ERRORS_SHOWN:
        summary.errors.append((result["block"], result["error"]))
    bar.update(1)
    bar.set_postfix(failed=summary.failed, refresh=False)
    return False


def _run_local(stage: str, todo: list[BlockSpec], process_block: Callable, store_factory: Callable,
               retries: int, summary: StageSummary, store: GraphStore, bar: Any, log_dir: str | None,
               fail_fast: bool = False) -> None:
    try:
        for block in todo:
            attempt = 1
            while True:
                result = run_block(stage, block, process_block, store_factory, attempt, log_dir, reraise=fail_fast)
                if not _record(summary, result, retries, store, bar):
                    break
                attempt += 1
    finally:
        close_worker_stores()
        close_worker_logs()


def _task_key(stage: str, block_id: int, attempt: int) -> str:
    return f"{stage}-{block_id}" if attempt == 1 else f"{stage}-{block_id}-attempt{attempt}"


def _run_distributed(client: Any, stage: str, todo: list[BlockSpec], process_block: Callable,
                     store_factory: Callable, retries: int, summary: StageSummary, store: GraphStore, bar: Any,
                     resources: dict[str, float] | None, log_dir: str | None) -> None:
    from distributed import as_completed

    if not todo:
        return
    if client.id not in _PLUGIN_CLIENTS:  # re-registering would tear down (close) the workers' open stores
        try:
            client.register_plugin(StoreCachePlugin(), name=StoreCachePlugin.name)
            _PLUGIN_CLIENTS.add(client.id)
        except Exception as err:  # closing connections at teardown is a courtesy, not a requirement
            logger.debug("could not register the store plugin: %s", err)
    by_id = {b.block_id: b for b in todo}
    extra = {"resources": resources} if resources else {}
    futures = client.map(_block_task, todo, key=[_task_key(stage, b.block_id, 1) for b in todo],
                         stage=stage, process_block=process_block, store_factory=store_factory, attempt=1,
                         log_dir=log_dir, pure=False, **extra)
    attempt_of = {f.key: (b.block_id, 1) for f, b in zip(futures, todo)}
    queue = as_completed(futures)
    del futures
    for future in queue:
        block_id, attempt = attempt_of.pop(future.key)
        if future.status == "finished":
            result = future.result()
        else:  # the task itself failed: KilledWorker after repeated worker deaths, unpicklable result, ...
            try:
                failure = future.exception()
            except Exception as exc:  # cancelled futures raise here
                failure = exc
            result = {"block": block_id, "attempt": attempt, "status": "failed", "seconds": 0.0,
                      "error": _short_error(failure), "ledger_error": "task did not return", "worker": ""}
            logger.warning("%s block %d attempt %d: task failed: %s", stage, block_id, attempt, result["error"])
        future.release()
        if _record(summary, result, retries, store, bar):
            key = _task_key(stage, block_id, attempt + 1)
            retry = client.submit(_block_task, by_id[block_id], stage, process_block, store_factory, attempt + 1,
                                  log_dir, key=key, pure=False, **extra)
            attempt_of[retry.key] = (block_id, attempt + 1)
            queue.add(retry)


# ---------------------------------------------------------------------------------------------------------
# A sequence of stages: staleness and resume


class BlockStage(Protocol):
    """What a stage module provides (see the module docstring)."""

    name: str

    @property
    def resources(self) -> dict[str, float] | None: ...

    def grid(self) -> Any: ...

    def params(self) -> dict[str, Any]: ...

    def prepare(self, fresh: bool) -> None: ...

    def forget(self, store: GraphStore) -> None: ...

    def process_block(self, block: BlockSpec) -> Any: ...

    def finalize(self) -> Any: ...


def params_changed(work: Path, stage: str, params: dict[str, Any]) -> bool:
    """Record ``params`` (with the package version) as the stage's in ``work``; True if they differ from the
    last run's (False on the first run)."""
    import json

    from ppp_dist import __version__

    path = work / f"params_{stage}.json"
    text = json.dumps({**params, "ppp_dist_version": __version__}, sort_keys=True, default=str)
    old = path.read_text() if path.exists() else None
    work.mkdir(parents=True, exist_ok=True)
    path.write_text(text)
    return old is not None and old != text


@dataclass
class StageRunner:
    """Runs stages in order and decides, per stage, whether its blocks are done already.

    A stage redoes every block when its parameters (or the package version) changed since the last run, when
    a stage before it did work in this run (its old results are stale then), when ``force`` says so, or
    with ``resume`` off; otherwise it skips the blocks its ledger marks done.
    """

    client: Any
    store_factory: Callable[[], GraphStore]
    work: Path
    resume: bool = True
    retries: int = 2
    progress: bool = False
    log_dir: str | os.PathLike | None = None
    fail_fast: bool = False  # in-process only: a failing block raises (run_stage)
    upstream_work: bool = False  # a stage of this run did work: the later ones redo every block

    def fresh(self, name: str, params: dict[str, Any], force: bool = False) -> bool:
        """Whether stage ``name`` must redo everything (recording its parameters)."""
        changed = params_changed(self.work, name, params)
        fresh = changed or self.upstream_work or force or not self.resume
        if changed and self.resume:
            logger.info("%s: parameters or package version changed since the last run, redoing every block", name)
        elif fresh and self.resume:
            logger.debug("%s: an upstream stage wrote new data, running every block", name)
        return fresh

    def run(self, stage: BlockStage, force: bool = False) -> StageSummary:
        fresh = self.fresh(stage.name, stage.params(), force)
        if fresh:
            store = self.store_factory()
            try:
                stage.forget(store)
            finally:
                store.close()
        stage.prepare(fresh)
        summary = run_stage(self.client, stage.name, list(stage.grid()), stage.process_block, self.store_factory,
                            retries=self.retries, resume=not fresh, progress=self.progress,
                            resources=stage.resources, log_dir=self.log_dir, fail_fast=self.fail_fast)
        self.upstream_work = self.upstream_work or (summary.done - summary.skipped) > 0
        return summary


__all__ = ["BlockStage", "StageRunner", "StageSummary", "StoreCachePlugin", "close_worker_logs",
           "format_summary_table", "params_changed", "run_block", "run_stage", "worker_log_path"]
