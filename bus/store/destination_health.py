"""The ``destination_health`` rows: each worker's latest report on each destination it forwards to.

A worker rewrites its own rows in one transaction every few seconds and removes them when it stops; a worker
that died without doing so leaves rows that age, which readers tell apart by ``reported_at`` and the next report
of any worker deletes once they are a day old.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import Row, delete, func, insert, select

from docbus.store.database import Database
from docbus.store.tables import dead_letters, destination_health

FORGOTTEN_AFTER = timedelta(days=1)  # rows of a worker that stopped without removing them


async def write_reports(db: Database, worker: str, rows: Sequence[dict[str, Any]], now: datetime) -> None:
    """Replaces ``worker``'s rows with ``rows`` (column values) and drops rows no worker renewed for a day."""
    table = destination_health
    async with db.transaction() as conn:
        await conn.execute(delete(table).where(table.c.worker == worker))
        await conn.execute(delete(table).where(table.c.reported_at < now - FORGOTTEN_AFTER))
        if rows:
            await conn.execute(insert(table), [{**row, "worker": worker, "reported_at": now} for row in rows])


async def remove_reports(db: Database, worker: str) -> None:
    async with db.transaction() as conn:
        await conn.execute(delete(destination_health).where(destination_health.c.worker == worker))


async def read_reports(db: Database) -> list[Row[Any]]:
    async with db.reader.connect() as conn:
        result = await conn.execute(
            select(destination_health).order_by(destination_health.c.destination, destination_health.c.worker)
        )
        return list(result.all())


async def dead_letters_waiting(db: Database) -> dict[str, int]:
    """Dead letters waiting for a resend, by destination."""
    c = dead_letters.c
    async with db.reader.connect() as conn:
        result = await conn.execute(
            select(c.destination, func.count()).where(c.resent_at.is_(None)).group_by(c.destination)
        )
        return {str(destination): int(count) for destination, count in result.all()}
