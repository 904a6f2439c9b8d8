"""What a failed intake write means for the sender and for the operator: full storage or another failure.

A full disk is the failure a single-machine deployment meets first, and the one an operator can mend at once (free
space, grow the volume). Intake answers it with a 503 that says so and tells the sender when to retry; the log and
``/readyz`` say so too, instead of a traceback per batch naming only ``OperationalError``.
"""

from __future__ import annotations

import errno
import logging
import sqlite3
import time
from dataclasses import dataclass

FULL_ERRNOS = frozenset({errno.ENOSPC, errno.EDQUOT, errno.EFBIG})
POSTGRES_DISK_FULL = "53100"  # SQLSTATE disk_full
RETRY_AFTER_FULL = 30.0  # seconds: space comes back when an operator acts, not in a moment
RETRY_AFTER_OTHER = 5.0
# While writes keep failing, the log says so at most this often (the first failure comes with its traceback).
FAILURE_LOG_INTERVAL = 10.0


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


def describe(exc: BaseException, *, store: str = "message store") -> str:
    """One line for the sender, ``/readyz`` and the log; never the SQL, its parameters or a path."""
    if storage_full(exc):
        return "the storage is full (no space left for the database or the payloads)"
    detail = f": {exc.strerror}" if isinstance(exc, OSError) and exc.strerror else ""
    return f"the {store} failed ({type(exc).__name__}{detail})"


@dataclass(frozen=True)
class WriteFailure:
    """An unbroken run of failed writes: since when (wall clock), how many (``unit``: the database counts
    group-commit batches, the payload store files), the last reason."""

    since: float
    count: int
    reason: str
    full: bool
    unit: str = "batches"

    def summary(self) -> str:
        since = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(self.since))
        return f"writes failing since {since} ({self.count} {self.unit}): {self.reason}"


class FailureStreak:
    """The unbroken run of failed writes to one store (the database, the payload store), for ``/readyz`` and the
    log: the first failure is logged with its traceback, then at most one line every ``FAILURE_LOG_INTERVAL``
    seconds while it lasts, and one line when a write succeeds again. A full disk fails every write for as long as
    it lasts; a traceback per write would bury the one line the operator needs."""

    def __init__(self, store: str, log: logging.Logger, *, unit: str = "batches", subject: str | None = None) -> None:
        self.store = store  # how the log names what failed: "database", "payload store"
        self._subject = subject or store  # how a reason names it ("the message store failed")
        self._log = log
        self._unit = unit
        self.current: WriteFailure | None = None
        self._logged = 0.0  # monotonic time of the last log line about the current run

    def failed(self, exc: BaseException, what: str) -> WriteFailure:
        """Notes one failed write (``what`` says which, for the first log line) and returns the run so far."""
        full = storage_full(exc)
        previous = self.current
        self.current = WriteFailure(
            since=time.time() if previous is None else previous.since,
            count=1 if previous is None else previous.count + 1,
            reason=describe(exc, store=self._subject),
            full=full,
            unit=self._unit,
        )
        now = time.monotonic()
        if previous is None:
            self._log.error("%s write failed for %s: %s", self.store, what, self.current.reason, exc_info=exc)
            self._logged = now
        elif now - self._logged >= FAILURE_LOG_INTERVAL:
            self._log.error("%s writes still failing: %s", self.store, self.current.summary())
            self._logged = now
        return self.current

    def succeeded(self) -> None:
        if self.current is not None:
            self._log.warning("%s writes succeed again after %s", self.store, self.current.summary())
            self.current = None
