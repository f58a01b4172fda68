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
