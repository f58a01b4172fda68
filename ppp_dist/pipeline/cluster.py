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
  ``account`` and ``job_extra_directives``, scheduler and workers on the network ``interface`` (``"lo"``:
  a one-machine SLURM, ``scripts/start_slurm.sh``); :func:`make_jobqueue_cluster` builds it without
  submitting, so ``cluster.job_script()`` can be checked, and :func:`start_cluster` scales it to
  ``n_workers`` jobs, whose output goes to ``log_directory``.

The dashboard link is logged at start; :func:`dashboard_link` makes it the address other machines reach.
"""

from __future__ import annotations

import contextlib
import ipaddress
import logging
import os
import signal
import socket
import threading
from collections.abc import Iterator
from typing import Any
from urllib.parse import urlsplit

from ppp_dist.config import ClusterConfig
from ppp_dist.errors import SchedulerError

logger = logging.getLogger(__name__)

CONNECT_TIMEOUT_S = 10.0  # how long joining a scheduler may take before SchedulerError


def _is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def reachable_link(link: str, dashboard_address: str, hostname: str | None = None) -> str:
    """``link`` (dask's dashboard link) with the host that other machines reach.

    dask names the scheduler's address, which is ``127.0.0.1`` for a local cluster even when the dashboard
    listens on every interface (``dashboard_address`` ``":8787"``: the default), so on a cluster node the
    link would point at the reader's own machine. Then the node's host name is used (when it resolves). A
    dashboard bound to one host (``"10.1.2.3:8787"``, ``"127.0.0.1:0"``) gets that host; a scheduler on
    another interface (``ib0``) already has a reachable address and keeps it. ``hostname``: this machine's
    name (default: ``socket.gethostname()``, if it resolves).
    """
    parts = urlsplit(link)
    if not parts.hostname:
        return link
    bound = dashboard_address.rpartition(":")[0].strip("[]")
    if bound in ("", "0.0.0.0", "::"):
        if not _is_loopback(parts.hostname):
            return link
        host = hostname
        if host is None:
            host = socket.gethostname()
            try:
                socket.getaddrinfo(host, None)
            except OSError:
                return link  # a host name that does not resolve helps no one
    else:
        host = bound
    host = f"[{host}]" if ":" in host else host
    netloc = f"{host}:{parts.port}" if parts.port else host
    return parts._replace(netloc=netloc).geturl()


def dashboard_link(client: Any, config: ClusterConfig) -> str:
    """The dashboard link of ``client``'s cluster as other machines reach it (:func:`reachable_link`).

    A joined scheduler (``kind = "scheduler"``) keeps dask's link: its dashboard is wherever its owner put it.
    """
    link = client.dashboard_link
    if not link or getattr(client, "cluster", None) is None:
        return link
    return reachable_link(link, config.dashboard_address)


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


def _client_for(cluster: Any, config: ClusterConfig) -> Any:
    from distributed import Client

    client = Client(cluster)
    logger.info("dask dashboard: %s", dashboard_link(client, config))
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
    return _client_for(cluster, config)


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
    return _client_for(cluster, config)


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
    if config.interface:
        kwargs["interface"] = config.interface
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


def make_jobqueue_cluster(config: ClusterConfig, log_directory: str | os.PathLike | None = None) -> Any:
    """The dask-jobqueue cluster for ``config.kind`` in slurm/lsf/pbs, with no job submitted yet.

    ``log_directory``: where each job writes its output (default: the batch system's, e.g. ``slurm-JOBID.out``
    in the current folder).
    """
    try:
        import dask_jobqueue
    except ImportError as err:
        raise SchedulerError(f'[cluster] kind = "{config.kind}" needs dask-jobqueue; install it with '
                             "pip install 'ppp_dist[cluster]'") from err
    classes = {"slurm": dask_jobqueue.SLURMCluster, "lsf": dask_jobqueue.LSFCluster, "pbs": dask_jobqueue.PBSCluster}
    if config.kind not in classes:
        raise SchedulerError(f'[cluster] kind = "{config.kind}" is not a batch system; use slurm, lsf or pbs')
    kwargs = jobqueue_kwargs(config)
    if log_directory is not None:
        kwargs["log_directory"] = str(log_directory)
    return classes[config.kind](**kwargs)


def start_cluster(config: ClusterConfig, *, scheduler_address: str | None = None,
                  connect_timeout: float = CONNECT_TIMEOUT_S, log_directory: str | os.PathLike | None = None) -> Any:
    """A ``distributed.Client`` for the cluster ``config`` describes (see the module docstring).

    ``scheduler_address`` (``--scheduler``) overrides the config and joins that scheduler.
    ``log_directory``: the output of batch-system worker jobs. Close with :func:`close_cluster`.
    """
    address = scheduler_address or (config.scheduler_address if config.kind == "scheduler" else "")
    if address or config.kind == "scheduler":
        return connect(address, connect_timeout)
    if config.kind == "local":
        return start_local_cluster(config)
    if config.kind == "cuda":
        return start_cuda_cluster(config)
    cluster = make_jobqueue_cluster(config, log_directory)
    jobs = config.n_workers or 1
    cluster.scale(jobs=jobs)
    logger.info("%s cluster: %d job(s) requested (%s, %s, %s per job)", config.kind, jobs, config.walltime,
                config.memory, config.cores)
    return _client_for(cluster, config)


def close_cluster(client: Any) -> None:
    """Close ``client`` and the cluster it started (a joined scheduler keeps running)."""
    cluster = getattr(client, "cluster", None)
    client.close()
    if cluster is not None:
        cluster.close()


__all__ = ["CONNECT_TIMEOUT_S", "close_cluster", "connect", "dashboard_link", "jobqueue_kwargs",
           "make_jobqueue_cluster", "reachable_link", "start_cluster", "start_cuda_cluster", "start_local_cluster",
           "workers_ignore_sigint"]
