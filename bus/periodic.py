"""Housekeeping that runs every so often in each worker (the retentions): one loop for all of it."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Awaitable, Callable

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
