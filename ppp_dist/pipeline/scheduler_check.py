"""Is there a dask scheduler at this address? Answered within seconds, before anything is written.

``--scheduler`` (or ``[cluster] scheduler_address``) may point at nothing, at a scheduler that is still
starting, or at something else listening on the port: an HTTP server, a socket that never answers. The dask
client would wait forever on the last two (until the batch job's walltime ran out), so the preflight first
opens a TCP connection (retrying for ``ppp_dist.pipeline.cluster.CONNECT_TIMEOUT_S``, like dask) and then asks dask's
``identity`` question, which only a scheduler answers with ``{"type": "Scheduler"}``.
"""

from __future__ import annotations

from ppp_dist.errors import SchedulerError

PROTOCOL_MIN_S = 3.0  # the dask handshake gets at least this long after the TCP connection succeeded


def check_scheduler(address: str) -> None:
    """SchedulerError unless a dask scheduler listens at ``address`` (tcp:// or tls://; others are left to dask).

    Like ``distributed.Client``, it keeps trying for ``ppp_dist.pipeline.cluster.CONNECT_TIMEOUT_S``, so a scheduler
    that is still starting is found; each try opens and closes one TCP connection.
    """
    import socket
    import time
    from urllib.parse import urlsplit

    from ppp_dist.pipeline import cluster

    text = address.strip() if "://" in address else f"tcp://{address.strip()}"
    try:
        parts = urlsplit(text)
        host, port, scheme = parts.hostname, parts.port, parts.scheme
    except ValueError:
        host, port, scheme = None, None, "tcp"
    if scheme not in ("tcp", "tls"):
        return
    if not host:
        raise SchedulerError(f"{address!r} is not a scheduler address; give --scheduler tcp://HOST:PORT, e.g. "
                             "tcp://127.0.0.1:8786")
    timeout = float(cluster.CONNECT_TIMEOUT_S)
    deadline, delay = time.monotonic() + timeout, 0.05
    while True:
        try:
            socket.create_connection((host, port or 8786), timeout=max(0.1, deadline - time.monotonic())).close()
            break
        except OSError as err:
            if time.monotonic() + delay >= deadline:
                reason = err.strerror or str(err) or type(err).__name__
                raise SchedulerError(f"cannot reach the dask scheduler at {address} ({reason}, for {timeout:g} s); "
                                     "start it (dask scheduler) or fix --scheduler / [cluster] scheduler_address"
                                     ) from err
            time.sleep(delay)
            delay = min(2 * delay, 0.5)
    if scheme == "tcp":  # something listens: make sure it speaks dask (an HTTP server would hang the client)
        _check_dask_protocol(f"tcp://{host}:{port or 8786}", address,
                             max(PROTOCOL_MIN_S, deadline - time.monotonic()))


def _check_dask_protocol(url: str, address: str, timeout: float) -> None:
    """SchedulerError unless the server at ``url`` answers dask's ``identity`` request as a scheduler
    within ``timeout`` seconds (a silent socket or an HTTP server does not)."""
    import asyncio

    async def identity() -> object:
        from distributed.comm import connect

        comm = await connect(url, timeout=timeout)
        try:
            await comm.write({"op": "identity", "reply": True})
            return await comm.read()
        finally:
            comm.abort()

    try:
        reply = asyncio.run(asyncio.wait_for(identity(), timeout))
        if isinstance(reply, dict):
            problem = "" if reply.get("type") == "Scheduler" else \
                f"it answered as {reply.get('type', 'something else')!r}"
        else:
            problem = "it answered oddly"
    except (OSError, TimeoutError, ValueError, TypeError, EOFError) as err:
        problem = f"it did not answer the dask protocol within {timeout:.0f} s ({type(err).__name__})"
    except Exception as err:  # the comm layer raises its own errors (CommClosedError, ...) on foreign servers
        problem = f"it did not answer the dask protocol ({type(err).__name__})"
    if problem:
        raise SchedulerError(f"{address} is not a dask scheduler: {problem}; give the scheduler's address "
                             "(tcp://HOST:8786, printed by dask scheduler) to --scheduler or [cluster] "
                             "scheduler_address")


__all__ = ["PROTOCOL_MIN_S", "check_scheduler"]
