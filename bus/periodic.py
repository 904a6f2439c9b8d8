"""Housekeeping that runs every so often in each worker (the retentions): one loop and one shape for all of it."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from abc import ABC, abstractmethod
from collections.abc import Awaitable, Callable
from typing import ClassVar

log = logging.getLogger(__name__)


async def every(interval: float, stop: asyncio.Event, one_pass: Callable[[], Awaitable[str | None]], what: str) -> None:
    """Run ``one_pass`` at once, then every ``interval`` seconds, until ``stop`` is set; log what it says it did.

    A failed pass is logged and tried again at the next interval: nothing depends on a housekeeping pass, so an
    unavailable database only postpones it."""
    while not stop.is_set():
        try:
            done = await one_pass()
            if done:
                log.info("%s: %s", what, done)
        except asyncio.CancelledError:
            raise
        except Exception:
            log.exception("%s failed; trying again in %g s", what, interval)
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(stop.wait(), timeout=interval)


class Retention(ABC):
    """Deletes what is older than ``retention_seconds`` in transactions of at most ``batch`` rows, pausing
    ``pause_seconds`` between them so that intake's group commits (the same write lock on SQLite) wait for one
    short transaction at a time; ``run`` makes a pass every ``interval_seconds``."""

    what: ClassVar[str]  # how the log names it

    def __init__(self, *, retention_seconds: float, interval_seconds: float, batch: int, pause_seconds: float) -> None:
        if retention_seconds <= 0:
            raise ValueError("retention_seconds must be positive (leave retention off instead)")
        if batch < 1:
            raise ValueError("batch must be positive")
        self._retention_ms = int(retention_seconds * 1000)
        self._interval = interval_seconds
        self._batch = batch
        self._pause = pause_seconds

    async def run(self, stop: asyncio.Event) -> None:
        """A pass at once, then every interval, until ``stop`` is set."""
        await every(self._interval, stop, self._pass, self.what)

    @abstractmethod
    async def _pass(self) -> str | None:
        """One pass; what it did, for the log (``None`` when it did nothing)."""
