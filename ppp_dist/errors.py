"""The exceptions ppp_dist raises for problems a user can fix.

Every message names what is wrong (file, key, block, value) and what to do about it. The CLI prints
``ppp-dist: error: <message>`` on one line and exits with code 2 for these; anything else is a bug
and exits with code 1.
"""

from __future__ import annotations


class PppDistError(Exception):
    """Base class; the CLI reports these in one sentence and exits with code 2."""


class ConfigError(PppDistError):
    """A config file, key, type or value is wrong."""


class InputDataError(PppDistError):
    """An input volume is missing, has the wrong axes, shape, channel count or dtype."""


class StorageError(PppDistError):
    """An output location cannot be written or holds something incompatible."""


class DatabaseError(PppDistError):
    """The graph database is unreachable, or holds data of another run or schema."""


class SchedulerError(PppDistError):
    """The dask scheduler is unreachable or the cluster cannot be started."""


class CheckpointError(PppDistError):
    """A model checkpoint is missing, unreadable or belongs to another architecture."""


class BlockError(PppDistError):
    """Processing one block failed; carries the block id for the ledger."""

    def __init__(self, block_id: int, reason: str) -> None:
        self.block_id = block_id
        self.reason = reason
        super().__init__(f"block {block_id}: {reason}")


class LockedError(PppDistError):
    """Another run holds the experiment (its lock file or the lock row of its database)."""


def disk_full(err: BaseException | None) -> str | None:
    """"no space left ..." when ``err`` (or an exception it was raised from) is a full disk or quota, else None."""
    import errno

    seen: set[int] = set()
    while err is not None and id(err) not in seen:
        seen.add(id(err))
        if isinstance(err, OSError) and err.errno in (errno.ENOSPC, errno.EDQUOT):
            return f"no space left on the device{f' (writing {err.filename})' if err.filename else ''}"
        if "database or disk is full" in str(err):
            return "no space left on the device of the run database"
        err = err.__cause__ or err.__context__
    return None
