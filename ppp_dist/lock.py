"""One run at a time per experiment: a lock file in the folder and a lock row in its run database.

Two runs on one experiment silently give a wrong result: the second clears the graph tables and the
ledger that the first is still painting from. So every command that writes an experiment holds its lock for
the whole run:

* ``<experiment>/run.lock``, a small JSON file: the run's token, host, pid (and the process's start time,
  which tells a reused pid apart), when it started, the command, and a heartbeat that a background thread
  renews every :data:`HEARTBEAT_S` seconds. It is created atomically (``os.link`` of a finished file, which
  also works on NFS), so two runs never both create it.
* the row ``name = 'experiment'`` of the ``locks`` table of the run database (blockwise label), with the same
  fields: it protects the database where the file does not, e.g. a copy of the folder that uses the same
  PostgreSQL database.

A second run is refused before it writes anything, in one sentence that names the holder. A lock whose
process is gone (same host: the pid is dead or belongs to another process) or whose heartbeat is older than
:data:`STALE_S` seconds (a run killed on another node) is taken over, with a log line saying whose and why.
``status`` only reads the lock.
"""

from __future__ import annotations

import datetime as _dt
import json
import logging
import os
import socket
import threading
import time
import uuid
from collections.abc import Callable
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import Any

from ppp_dist.config import DatabaseConfig
from ppp_dist.errors import LockedError, StorageError

logger = logging.getLogger(__name__)

LOCK_NAME = "run.lock"
ROW = "experiment"  # the name of the lock row in the run database
HEARTBEAT_S = 30.0  # how often the holder renews its heartbeat
STALE_S = 300.0  # a heartbeat older than this means the holder is gone (e.g. killed on another node)


def _process_start(pid: int) -> str:
    """When process ``pid`` started (Linux: clock ticks since boot, from /proc), "" where unknown."""
    try:
        with open(f"/proc/{pid}/stat", encoding="ascii", errors="replace") as f:
            return f.read().rsplit(")", 1)[1].split()[19]
    except (OSError, IndexError):
        return ""


def _pid_alive(pid: int, boot: str) -> bool:
    """Whether process ``pid`` of this host runs, and is the one that started at ``boot`` (if known)."""
    if pid <= 0:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # another user's process: it exists
        pass
    now = _process_start(pid)
    return not (boot and now and now != boot)


@dataclass(frozen=True)
class Holder:
    """The run that holds (or held) an experiment's lock."""

    token: str  # random, one per run
    host: str
    pid: int
    boot: str  # the process's start time (see _process_start), to tell a reused pid apart
    started: str  # ISO time the run took the lock
    heartbeat: float  # unix time of its last sign of life
    command: str  # e.g. "ppp-dist label" (never the arguments: they may hold a DSN)

    def describe(self) -> str:
        return f"process {self.pid} on {self.host} ({self.command}, started {self.started})"

    def gone(self, now: float | None = None) -> str:
        """Why this holder no longer runs ("" when it may still run)."""
        age = (time.time() if now is None else now) - self.heartbeat
        if self.host == socket.gethostname() and not _pid_alive(self.pid, self.boot):
            return f"its process {self.pid} on this host is gone"
        if age > STALE_S:
            return f"its heartbeat stopped {age:.0f} s ago (more than {STALE_S:.0f} s)"
        return ""


def locked_message(subject: str, holder: Holder) -> str:
    """The sentence for an experiment (``subject``: "experiment E", "database D") another run holds."""
    age = max(0.0, time.time() - holder.heartbeat)
    return (f"{subject} is in use by {holder.describe()}, alive {age:.0f} s ago; wait until it "
            f"ends (a lock whose process died, or whose heartbeat stops for {STALE_S:.0f} s, is taken over), or "
            "start a new experiment with --root")


def read_holder(path: Path | str) -> Holder | None:
    """The holder recorded in the lock file ``path``; None if there is none or it cannot be read."""
    try:
        data = json.loads(Path(path).read_text(encoding="utf-8"))
        return Holder(token=str(data["token"]), host=str(data["host"]), pid=int(data["pid"]),
                      boot=str(data.get("boot", "")), started=str(data["started"]),
                      heartbeat=float(data["heartbeat"]), command=str(data.get("command", "")))
    except FileNotFoundError:
        return None
    except (OSError, ValueError, KeyError, TypeError):
        return Holder("", "?", 0, "", "?", 0.0, "an unreadable lock file")


def check_free(folder: Path | str) -> None:
    """LockedError if a live run holds the experiment ``folder``; reads only."""
    holder = read_holder(Path(folder) / LOCK_NAME)
    if holder is not None and not holder.gone():
        raise LockedError(locked_message(f"experiment {folder}", holder))


def _row(cur: Any) -> Holder | None:
    from ppp_dist.io.lock_rows import read_lock_row

    found = read_lock_row(cur, ROW)
    if found is None:
        return None
    token, host, pid, boot, started, heartbeat, command = found
    return Holder(str(token), str(host), int(pid), str(boot), str(started), float(heartbeat), str(command))


def check_database_free(config: DatabaseConfig, folder: Path | str | None) -> None:
    """LockedError if a live run holds the lock row of the run database of ``config``; reads only."""
    from ppp_dist.io.database import open_read_only

    db = open_read_only(config, folder)
    if db is None:
        return
    try:
        with db.transaction(write=False) as cur:
            holder = _row(cur)
    except db.driver_errors:  # no locks table yet (a database of an older version, or a new one)
        return
    finally:
        db.close()
    if holder is not None and not holder.gone():
        raise LockedError(locked_message(f"the run database {db.where}", holder))


class ExperimentLock:
    """The lock of one experiment folder, held by this process from :meth:`acquire` to :meth:`release`.

    Use as a context manager (``with ExperimentLock(path, "ppp-dist label").acquire(): ...``); a background
    thread renews the heartbeat of the file and of every database row taken with :meth:`hold_database`.
    """

    def __init__(self, folder: Path | str, command: str) -> None:
        self.folder = Path(folder)
        self.path = self.folder / LOCK_NAME
        now = time.time()
        self.holder = Holder(token=uuid.uuid4().hex, host=socket.gethostname(), pid=os.getpid(),
                             boot=_process_start(os.getpid()),
                             started=_dt.datetime.fromtimestamp(now).astimezone().isoformat(timespec="seconds"),
                             heartbeat=now, command=command)
        self._databases: list[tuple[Any, Path]] = []
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._lost = False

    # -- the file

    def acquire(self) -> ExperimentLock:
        """Take the lock (taking over a stale one, with a log line); LockedError if a live run holds it."""
        for _ in range(5):
            if self._create():
                break
            found = read_holder(self.path)
            if found is None:
                continue  # released just now
            reason = found.gone() if found.token else "its lock file cannot be read"
            if not reason:
                raise LockedError(locked_message(f"experiment {self.folder}", found))
            if self._take_over(found):
                logger.warning("experiment %s: took over the lock of %s: %s", self.folder, found.describe(), reason)
                break
        else:
            raise LockedError(f"experiment {self.folder} is being locked by other runs at this moment; run the "
                              "command again in a minute")
        self._thread = threading.Thread(target=self._beat, name="ppp-dist-lock-heartbeat", daemon=True)
        self._thread.start()
        logger.debug("experiment %s locked by %s", self.folder, self.holder.describe())
        return self

    def _write(self, target: Path) -> None:
        target.write_text(json.dumps(asdict(self.holder), indent=1) + "\n", encoding="utf-8")

    def _create(self) -> bool:
        """Create the lock file atomically with this run's holder; False if one exists."""
        tmp = self.path.with_name(f".{LOCK_NAME}.{self.holder.token}")
        try:
            self._write(tmp)
            try:
                os.link(tmp, self.path)
                return True
            except FileExistsError:
                return False
            except OSError:  # a file system without hard links: exclusive create instead
                try:
                    fd = os.open(self.path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644)
                except FileExistsError:
                    return False
                with os.fdopen(fd, "w", encoding="utf-8") as f:
                    f.write(tmp.read_text(encoding="utf-8"))
                return True
        except OSError as err:
            raise StorageError(f"experiment folder {self.folder} cannot be written ({err.strerror}); its lock file "
                               f"{LOCK_NAME} cannot be created") from err
        finally:
            tmp.unlink(missing_ok=True)

    def _take_over(self, stale: Holder) -> bool:
        """Move the stale lock file aside and create ours; False if another run was quicker."""
        aside = self.path.with_name(f".{LOCK_NAME}.stale-{self.holder.token}")
        try:
            os.rename(self.path, aside)
        except FileNotFoundError:
            return False
        moved = read_holder(aside)
        if moved is not None and moved.token != stale.token and not moved.gone():  # a fresh lock: put it back
            try:
                os.link(aside, self.path)
            except FileExistsError:
                pass
            aside.unlink(missing_ok=True)
            return False
        aside.unlink(missing_ok=True)
        return self._create()

    # -- the database row

    def hold_database(self, config: DatabaseConfig) -> None:
        """Take the lock row of the run database of ``config`` too (blockwise stages); LockedError if a live
        run holds it. Released with the file."""
        from ppp_dist.io.database import open_database
        from ppp_dist.io.lock_rows import replace_lock_row

        with open_database(config, self.folder) as db:
            def work() -> None:
                with db.transaction() as cur:
                    found = _row(cur)
                    if found is not None and found.token != self.holder.token:
                        reason = found.gone()
                        if not reason:
                            raise LockedError(locked_message(f"the run database {db.where}", found))
                        logger.warning("database %s: took over the lock row of %s: %s", db.where, found.describe(),
                                       reason)
                    h = self.holder
                    replace_lock_row(cur, ROW, (h.token, h.host, h.pid, h.boot, h.started, h.heartbeat, h.command))
            db.retrying(work, "taking the lock row of the run")
        self._databases.append((config, self.folder))

    def _database_rows(self, change: Callable[[Any], None]) -> None:
        """``change(db)`` on each run database whose lock row this run holds."""
        from ppp_dist.io.database import open_database

        for config, folder in self._databases:
            try:
                with open_database(config, folder) as db:
                    change(db)
            except Exception as err:  # a heartbeat or release that fails is logged; the run goes on
                logger.warning("lock row of the run database: %s", str(err).splitlines()[0] if str(err) else err)

    # -- heartbeat and release

    def _beat(self) -> None:
        while not self._stop.wait(HEARTBEAT_S):
            self.renew()

    def renew(self) -> None:
        """Renew the heartbeat of the lock file and rows (the background thread calls this)."""
        current = read_holder(self.path)
        if current is None or current.token != self.holder.token:
            if not self._lost:
                self._lost = True
                logger.warning("experiment %s: this run lost its lock (%s); another run may write the same "
                               "outputs", self.folder, "taken over" if current else "lock file removed")
            return
        self.holder = replace(self.holder, heartbeat=time.time())
        tmp = self.path.with_name(f".{LOCK_NAME}.{self.holder.token}")
        try:
            self._write(tmp)
            os.replace(tmp, self.path)
        except OSError as err:
            logger.warning("experiment %s: cannot renew the lock file (%s)", self.folder, err.strerror)
        from ppp_dist.io.lock_rows import renew_lock_row

        token, heartbeat = self.holder.token, self.holder.heartbeat
        self._database_rows(lambda db: renew_lock_row(db, ROW, token, heartbeat))

    def release(self) -> None:
        """Stop the heartbeat, delete the row(s) and the lock file (only if they are still this run's)."""
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=10)
        from ppp_dist.io.lock_rows import delete_lock_row

        token = self.holder.token
        self._database_rows(lambda db: delete_lock_row(db, ROW, token))
        current = read_holder(self.path)
        if current is not None and current.token == self.holder.token:
            self.path.unlink(missing_ok=True)
        logger.debug("experiment %s unlocked", self.folder)

    def __enter__(self) -> ExperimentLock:
        return self

    def __exit__(self, *exc: object) -> None:
        self.release()


__all__ = ["HEARTBEAT_S", "Holder", "LOCK_NAME", "STALE_S", "ExperimentLock", "check_database_free", "check_free",
           "locked_message", "read_holder"]
