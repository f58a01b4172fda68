"""Helpers shared by the benchmark scripts: RSS sampling, machine description, markdown tables, sizes on disk.

Imported by ``scripts/bench_suite.py``, ``bench_pipeline.py``, ``bench_agglomerate.py``, ``bench_graph_db.py``
and ``bench_label.py`` (they put ``scripts/`` on ``sys.path`` first, so each stays runnable alone).
Nothing here imports ``ppp_dist``.
"""

from __future__ import annotations

import bisect
import json
import os
import platform
import resource
import subprocess
import sys
import threading
import time
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

MIB = 2 ** 20
ROOT = Path(__file__).resolve().parents[1]


def maxrss_mib() -> float:
    """Peak RSS of this process so far, MiB: ``VmHWM`` of /proc/self/status (Linux), else ``ru_maxrss``.

    ``ru_maxrss`` survives ``exec`` on Linux: a subprocess started from a large parent reports at least the
    parent's RSS at the fork. ``VmHWM`` belongs to the address space and starts afresh at ``exec``.
    """
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024.0
    except (OSError, ValueError, IndexError):
        pass
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0


def rss_mib(pid: int | None = None) -> float:
    """Current RSS of a process (default: this one), MiB; 0 if it is gone."""
    import psutil

    try:
        return psutil.Process(pid or os.getpid()).memory_info().rss / MIB
    except psutil.Error:
        return 0.0


class RssSampler(threading.Thread):
    """Polls the RSS of named processes every ``interval`` s (psutil) and keeps a timeline.

    ``pids``: name -> pid, e.g. {"driver": os.getpid(), "worker0": 1234}. ``timeline`` holds
    (t, {name: MiB}) with t in seconds from the start (``time.perf_counter`` based, see ``t0``);
    :meth:`peaks` gives the maximum per name over all samples or over a time window.
    """

    def __init__(self, pids: dict[str, int], interval: float = 0.05) -> None:
        super().__init__(daemon=True)
        import psutil

        self.procs = {name: psutil.Process(pid) for name, pid in pids.items()}
        self.interval = interval
        self.halt = threading.Event()
        self.t0 = time.perf_counter()
        self.timeline: list[tuple[float, dict[str, float]]] = []

    def sample(self) -> None:
        row = {}
        for name, proc in self.procs.items():
            try:
                row[name] = proc.memory_info().rss / MIB
            except Exception:  # noqa: BLE001 - a finished process reads as 0
                row[name] = 0.0
        self.timeline.append((time.perf_counter() - self.t0, row))

    def run(self) -> None:
        while not self.halt.is_set():
            self.sample()
            self.halt.wait(self.interval)

    def stop(self) -> None:
        self.halt.set()
        self.join()
        self.sample()

    def peaks(self, start: float | None = None, end: float | None = None) -> dict[str, float]:
        """Max MiB per name over samples with ``start <= t <= end`` (seconds since t0; None = open), plus
        the last sample before ``start`` and the first after ``end`` (a window shorter than the interval)."""
        out: dict[str, float] = {}
        times = [t for t, _ in self.timeline]
        lo = 0 if start is None else max(0, bisect.bisect_left(times, start) - 1)
        hi = len(times) if end is None else min(len(times), bisect.bisect_right(times, end) + 1)
        for _, row in self.timeline[lo:hi]:
            for name, value in row.items():
                out[name] = max(out.get(name, 0.0), value)
        return out


def machine() -> dict[str, Any]:
    """CPU count, model, memory, load average, platform, Python and key library versions."""
    import psutil

    info: dict[str, Any] = {"cpu_count": os.cpu_count(), "platform": platform.platform(),
                            "python": platform.python_version(),
                            "memory_gib": round(psutil.virtual_memory().total / 2 ** 30, 1),
                            "available_gib": round(psutil.virtual_memory().available / 2 ** 30, 1),
                            "load_average": [round(x, 2) for x in os.getloadavg()]}
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                info["cpu_model"] = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    for mod in ("numpy", "numba", "scipy", "networkx", "dask", "distributed", "zarr"):
        try:
            info[mod] = __import__(mod).__version__
        except Exception:  # noqa: BLE001 - a missing library is just not listed
            pass
    return info


def disk_bytes(path: str | os.PathLike[str]) -> int:
    """Bytes of all files under ``path`` (a file or a folder; 0 if missing): the stored, compressed size."""
    p = Path(path)
    if p.is_file():
        return p.stat().st_size
    if not p.exists():
        return 0
    return sum(f.stat().st_size for f in p.rglob("*") if f.is_file())


def fmt(value: Any, digits: int = 3) -> str:
    """Numbers for tables: thousands separators, ``digits`` significant digits for floats; None -> '–'."""
    if value is None:
        return "–"
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, int):
        return f"{value:,}"
    if isinstance(value, float):
        if value != value:  # NaN
            return "–"
        if value == 0:
            return "0"
        a = abs(value)
        if a >= 10 ** digits:
            return f"{value:,.0f}"
        if a >= 1:
            return f"{value:.{max(0, digits - len(str(int(a))))}f}"
        return f"{value:.{digits}g}"
    return str(value)


def md_table(headers: Sequence[str], rows: Iterable[Sequence[Any]], align: str | None = None) -> str:
    """A markdown table; ``align`` one char per column ('l' or 'r'; default: first left, others right)."""
    headers = list(headers)
    align = align or "l" + "r" * (len(headers) - 1)
    sep = ["---:" if a == "r" else "---" for a in align]
    lines = ["| " + " | ".join(headers) + " |", "|" + "|".join(sep) + "|"]
    for row in rows:
        lines.append("| " + " | ".join(fmt(c) for c in row) + " |")
    return "\n".join(lines)


def run_json_subprocess(args: Sequence[str], timeout: float, env: dict[str, str] | None = None,
                        cwd: str | os.PathLike[str] | None = None) -> dict[str, Any]:
    """Run ``python args...`` and parse the last stdout line as JSON.

    Returns ``{"error": ...}`` on a timeout or a failure (with the last stderr line), never raises.
    """
    try:
        out = subprocess.run([sys.executable, *args], capture_output=True, text=True, timeout=timeout,
                             env=env, cwd=cwd or ROOT)
    except subprocess.TimeoutExpired:
        return {"error": f"timeout after {timeout:.0f} s"}
    if out.returncode != 0:
        tail = out.stderr.strip().splitlines()[-1:] or [f"exit code {out.returncode}"]
        return {"error": f"exit code {out.returncode}: {tail[0]}"}
    lines = [ln for ln in out.stdout.strip().splitlines() if ln.startswith("{")]
    if not lines:
        return {"error": "no JSON on stdout"}
    return json.loads(lines[-1])


def stamp() -> str:
    """UTC time stamp for run folders: 20261127T174500Z."""
    return time.strftime("%Y%m%dT%H%M%SZ", time.gmtime())
