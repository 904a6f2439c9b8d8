"""Keeping a library's repeated complaints from burying the log.

aiokafka logs every failed connection attempt at ERROR, and it tries again every half second or so: while a
broker refuses docbus' credentials or is down, a process writes the same line thousands of times an hour, and the
lines docbus writes about it itself (once per state: the broker degraded, the outbox waiting, the broker back)
drown. :class:`Repeats` lets the first record of each kind through, then one per ``interval`` with the count of
those left out in between.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable

REPEAT_INTERVAL = 60.0


class Repeats(logging.Filter):
    """Passes records of loggers under ``prefix`` at WARNING or above at most once per ``interval`` for each
    logger and message template; everything else passes untouched."""

    def __init__(
        self, prefix: str = "aiokafka", interval: float = REPEAT_INTERVAL, clock: Callable[[], float] = time.monotonic
    ) -> None:
        super().__init__()
        self._prefix = prefix
        self._interval = interval
        self._clock = clock
        self._seen: dict[tuple[str, int, str], tuple[float, int]] = {}  # kind → (last let through, left out since)

    def filter(self, record: logging.LogRecord) -> bool:
        if record.levelno < logging.WARNING or not (
            record.name == self._prefix or record.name.startswith(self._prefix + ".")
        ):
            return True
        key = (record.name, record.levelno, str(record.msg))
        now = self._clock()
        passed, left_out = self._seen.get(key, (None, 0))
        if passed is not None and now - passed < self._interval:
            self._seen[key] = (passed, left_out + 1)
            return False
        self._seen[key] = (now, 0)
        if left_out:
            record.msg = f"{record.msg} [and {left_out} more like it in the last {self._interval:g} s, not shown]"
        return True
