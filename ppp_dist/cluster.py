"""Start or join the dask cluster that runs the blockwise stages, from the ``[cluster]`` config section.

``kind``:

* ``local`` — a ``LocalCluster`` on this machine: one worker process per core (or ``n_workers``), one
  thread each (numba kernels release the GIL; one thread per process avoids oversubscription), the
  dashboard on ``dashboard_address``.
* ``scheduler`` — join a running scheduler (``scheduler_address`` or ``--scheduler``); an unreachable
  address fails within ``CONNECT_TIMEOUT_S`` with one sentence.
* ``cuda`` — ``dask_cuda.LocalCUDACluster``: one worker per GPU with the resource ``GPU=1`` (GPU tasks are
  submitted with ``resources={"GPU": 1}``). Without dask-cuda or without a GPU: one log line and a local
  CPU cluster instead.
* ``slurm`` / ``lsf`` / ``pbs`` — a dask-jobqueue cluster: each job runs ``cores // threads_per_worker``
  worker processes (one per GPU when ``gpus_per_job`` > 0) with ``memory`` / ``walltime`` / ``queue`` /
  ``account`` and ``job_extra_directives``; :func:`make_jobqueue_cluster` builds it without submitting,
  so ``cluster.job_script()`` can be checked, and :func:`start_cluster` scales it to ``n_workers`` jobs.

The dashboard link is logged at start.
"""

from __future__ import annotations

import contextlib
import logging
import os
import signal
import threading
from collections.abc import Iterator
from typing import Any

from ppp_dist.config import ClusterConfig
from ppp_dist.errors import SchedulerError

logger = logging.getLogger(__name__)

CONNECT_TIMEOUT_S = 10.0  # how long joining a scheduler may take before SchedulerError


@contextlib.contextmanager
def workers_ignore_sigint() -> Iterator[None]:
    """Worker processes started inside ignore SIGINT: Ctrl-C in a terminal goes to the whole process group,
    and workers that took it would each print a KeyboardInterrupt traceback while this process (which gets it
    too) stops the cluster and says "interrupted" in one line."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    previous = signal.signal(signal.SIGINT, signal.SIG_IGN)  # inherited by the worker processes started now
    try:
        yield
    finally:
        signal.signal(signal.SIGINT, previous)


def _client_for(cluster: Any) -> Any:
    from distributed import Client

    client = Client(cluster)
    logger.info("dask dashboard: %s", client.dashboard_link)
    return client


def _local_workers(config: ClusterConfig) -> int:
    return config.n_workers or max(1, (os.cpu_count() or 1) // max(1, config.threads_per_worker))


def start_local_cluster(config: ClusterConfig) -> Any:
    """Client of a new ``LocalCluster`` (processes, ``threads_per_worker`` threads each)."""
    from distributed import LocalCluster

    with workers_ignore_sigint():
        cluster = LocalCluster(n_workers=_local_workers(config), threads_per_worker=config.threads_per_worker,
                               processes=True, memory_limit=config.memory_limit,
                               dashboard_address=config.dashboard_address, silence_logs=logging.WARNING)
    logger.info("local cluster: %d worker processes x %d thread(s)", len(cluster.workers), config.threads_per_worker)
    return _client_for(cluster)


def connect(address: str, timeout: float = CONNECT_TIMEOUT_S) -> Any:
    """Client of the running scheduler at ``address``; :class:`SchedulerError` if it does not answer."""
    from distributed import Client

    if not address:
        raise SchedulerError("no scheduler address: set [cluster] scheduler_address or pass "
                             "--scheduler tcp://HOST:8786")
    try:
        client = Client(address, timeout=timeout)
    except (OSError, TimeoutError, ValueError) as err:
        raise SchedulerError(f"cannot reach the dask scheduler at {address} within {timeout:g} s "
                             f"({type(err).__name__}); start it (dask scheduler) or fix [cluster] "
                             "scheduler_address / --scheduler") from err
    logger.info("joined scheduler %s with %d workers; dashboard: %s", address,
                len(client.scheduler_info().get("workers", {})), client.dashboard_link)
    return client


def start_cuda_cluster(config: ClusterConfig) -> Any:
    """Client of a ``LocalCUDACluster`` (one worker per GPU), or of a local CPU cluster if that fails."""
    try:
        from dask_cuda import LocalCUDACluster
    except ImportError:
        logger.warning("[cluster] kind = \"cuda\" but dask-cuda is not installed (pip install 'ppp_dist[gpu]'); "
                       "running on a local CPU cluster instead")
        return start_local_cluster(config)
    kwargs: dict[str, Any] = {"threads_per_worker": config.threads_per_worker, "resources": {"GPU": 1},
                              "dashboard_address": config.dashboard_address, "silence_logs": logging.WARNING}
    if config.n_workers:
        kwargs["n_workers"] = config.n_workers
    if config.memory_limit != "auto":
        kwargs["memory_limit"] = config.memory_limit
    try:
        with workers_ignore_sigint():
            cluster = LocalCUDACluster(**kwargs)
    except Exception as err:  # NVMLError_LibraryNotFound, no devices, CUDA driver errors: all mean "no GPU"
        logger.warning("[cluster] kind = \"cuda\" but no usable GPU (%s: %s); running on a local CPU cluster "
                       "instead", type(err).__name__, str(err).strip().splitlines()[0] if str(err).strip() else "")
        return start_local_cluster(config)
    logger.info("CUDA cluster: %d GPU workers", len(cluster.workers))
    return _client_for(cluster)


def _lsf_walltime(walltime: str) -> str:
    """LSF's ``bsub -W`` takes [HH:]MM; drop the seconds of HH:MM:SS."""
    parts = walltime.split(":")
    return ":".join(parts[:2]) if len(parts) == 3 else walltime


def jobqueue_kwargs(config: ClusterConfig) -> dict[str, Any]:
    """Keyword arguments of the dask-jobqueue cluster class for ``config`` (no cluster is made)."""
    gpus = config.gpus_per_job
    processes = gpus if gpus else max(1, config.cores // max(1, config.threads_per_worker))
    directives = list(config.job_extra_directives)
    worker_args: list[str] = []
    if gpus:
        worker_args += ["--resources", "GPU=1"]
    kwargs: dict[str, Any] = {"cores": config.cores, "memory": config.memory, "processes": processes,
                              "walltime": config.walltime, "worker_extra_args": worker_args,
                              "scheduler_options": {"dashboard_address": config.dashboard_address},
                              "silence_logs": "error"}
    if config.queue:
        kwargs["queue"] = config.queue
    if config.kind == "slurm":
        if gpus:
            directives.append(f"--gres=gpu:{gpus}")
        if config.account:
            kwargs["account"] = config.account
    elif config.kind == "lsf":
        kwargs["walltime"] = _lsf_walltime(config.walltime)
        if gpus:
            directives.append(f'-gpu "num={gpus}"')
        if config.account:
            kwargs["project"] = config.account
        kwargs["use_stdin"] = True
    elif config.kind == "pbs":
        if gpus:
            kwargs["resource_spec"] = f"select=1:ncpus={config.cores}:ngpus={gpus}:mem={config.memory.replace('i', '')}"
        if config.account:
            kwargs["account"] = config.account
    kwargs["job_extra_directives"] = directives
    return kwargs


def make_jobqueue_cluster(config: ClusterConfig) -> Any:
    """The dask-jobqueue cluster for ``config.kind`` in slurm/lsf/pbs, with no job submitted yet."""
    try:
        import dask_jobqueue
    except ImportError as err:
        raise SchedulerError(f'[cluster] kind = "{config.kind}" needs dask-jobqueue; install it with '
                             "pip install 'ppp_dist[cluster]'") from err
    classes = {"slurm": dask_jobqueue.SLURMCluster, "lsf": dask_jobqueue.LSFCluster, "pbs": dask_jobqueue.PBSCluster}
    if config.kind not in classes:
        raise SchedulerError(f'[cluster] kind = "{config.kind}" is not a batch system; use slurm, lsf or pbs')
    return classes[config.kind](**jobqueue_kwargs(config))


def start_cluster(config: ClusterConfig, *, scheduler_address: str | None = None,
                  connect_timeout: float = CONNECT_TIMEOUT_S) -> Any:
    """A ``distributed.Client`` for the cluster ``config`` describes (see the module docstring).

    ``scheduler_address`` (``--scheduler``) overrides the config and joins that scheduler. Close with
    :func:`close_cluster`.
    """
    address = scheduler_address or (config.scheduler_address if config.kind == "scheduler" else "")
    if address or config.kind == "scheduler":
        return connect(address, connect_timeout)
    if config.kind == "local":
        return start_local_cluster(config)
    if config.kind == "cuda":
        return start_cuda_cluster(config)
    cluster = make_jobqueue_cluster(config)
    jobs = config.n_workers or 1
    cluster.scale(jobs=jobs)
    logger.info("%s cluster: %d job(s) requested (%s, %s, %s per job)", config.kind, jobs, config.walltime,
                config.memory, config.cores)
    return _client_for(cluster)


def close_cluster(client: Any) -> None:
    """Close ``client`` and the cluster it started (a joined scheduler keeps running)."""
    cluster = getattr(client, "cluster", None)
    client.close()
    if cluster is not None:
        cluster.close()


__all__ = ["CONNECT_TIMEOUT_S", "close_cluster", "connect", "jobqueue_kwargs", "make_jobqueue_cluster",
           "start_cluster", "start_cuda_cluster", "start_local_cluster", "workers_ignore_sigint"]
