"""Timing a database's write transactions, for the retention benchmarks: how long intake's group commits may wait
for one of them on SQLite's write lock."""

from __future__ import annotations

import contextlib
import time
from collections.abc import AsyncIterator

from docbus.store.database import Database


def timed_transactions(db: Database) -> list[float]:
    """From now on every ``db.transaction()`` adds its duration (seconds) to the list returned."""
    durations: list[float] = []
    plain = db.transaction

    @contextlib.asynccontextmanager
    async def timed() -> AsyncIterator[object]:
        started = time.perf_counter()
        async with plain() as conn:
            yield conn
        durations.append(time.perf_counter() - started)

    db.transaction = timed  # type: ignore[method-assign]
    return durations


def summary(durations: list[float], batch: int) -> str:
    ordered = sorted(durations)
    return (
        f"{len(ordered)} transactions of up to {batch}: median {ordered[len(ordered) // 2] * 1000:.1f} ms, "
        f"max {ordered[-1] * 1000:.1f} ms"
    )
