"""What a failed intake write means for the sender and for the operator: full storage or another failure.

A full disk is the failure a single-machine deployment meets first, and the one an operator can mend at once (free
space, grow the volume). Intake answers it with a 503 that says so and tells the sender when to retry; the log and
``/readyz`` say so too, instead of a traceback per batch naming only ``OperationalError``.
"""

from __future__ import annotations

import errno
import sqlite3
import time
from dataclasses import dataclass

FULL_ERRNOS = frozenset({errno.ENOSPC, errno.EDQUOT, errno.EFBIG})
POSTGRES_DISK_FULL = "53100"  # SQLSTATE disk_full
RETRY_AFTER_FULL = 30.0  # seconds: space comes back when an operator acts, not in a moment
RETRY_AFTER_OTHER = 5.0


def storage_full(exc: BaseException) -> bool:
    """Whether ``exc`` (or what it wraps) says the storage is full: SQLite's SQLITE_FULL, PostgreSQL's disk_full,
    or an operating-system error for a full disk, an exhausted quota or a file-size limit."""
    seen: set[int] = set()
    current: BaseException | None = exc
    while current is not None and id(current) not in seen:
        seen.add(id(current))
        if isinstance(current, sqlite3.Error) and getattr(current, "sqlite_errorcode", None) == sqlite3.SQLITE_FULL:
            return True
        if isinstance(current, OSError) and current.errno in FULL_ERRNOS:
            return True
        if getattr(current, "sqlstate", None) == POSTGRES_DISK_FULL or getattr(current, "pgcode", None) == (
            POSTGRES_DISK_FULL
        ):
            return True
        current = getattr(current, "orig", None) or current.__cause__ or current.__context__
    return False


def describe(exc: BaseException) -> str:
    """One line for the sender and the log; never the SQL or its parameters."""
    if storage_full(exc):
        return "the storage is full (no space left for the database or the payloads)"
    return f"the message store failed ({type(exc).__name__})"


@dataclass(frozen=True)
class WriteFailure:
    """An unbroken run of failed intake writes: since when (wall clock), how many batches, the last reason."""

    since: float
    batches: int
    reason: str
    full: bool

    def summary(self) -> str:
        since = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(self.since))
        return f"writes failing since {since} ({self.batches} batches): {self.reason}"
