"""The lifecycle event stream: every event of every message, published to ``<prefix>.status`` in order.

Events are written by many processes (gateways, relays, workers) into the events table; one process at a time
(holding a lease on the ``stream_cursors`` row) reads them after the last published id and publishes them, keyed
by message id, then moves the cursor. Delivery is at least once (a crash between publish and cursor move
re-publishes a batch; consumers deduplicate by event id).

PostgreSQL hands out ids before commit, so an event can become visible after a later id; events are therefore
read only once they were written ``settle_seconds`` ago (their ``recorded_at``, not their ``at``: a delivery is
stamped when the axis acknowledged it, and its row may be written later), which covers any transaction docbus
keeps open.
"""

from __future__ import annotations

import asyncio
import logging
from datetime import UTC, datetime, timedelta

from sqlalchemy import update

from docbus.broker.base import Broker, OutgoingRecord
from docbus.store.database import Database
from docbus.store.leases import HeldLease
from docbus.store.messages import EVENT_SETTLE, settled_prefix, streamed_events_after
from docbus.store.tables import stream_cursors
from docbus.topics import Topics

log = logging.getLogger(__name__)

CURSOR = "status"


class StatusStream:
    def __init__(
        self,
        db: Database,
        broker: Broker,
        topics: Topics,
        *,
        owner: str,
        settle_seconds: float = EVENT_SETTLE.total_seconds(),
        lease_seconds: float = 15.0,
        batch_size: int = 500,
        interval: float = 0.5,
    ) -> None:
        self._db = db
        self._broker = broker
        self._topics = topics
        self._owner = owner
        self._settle = timedelta(seconds=settle_seconds)
        # While this process holds the stream it is the only writer of the cursor: it remembers the position, and
        # the lease is renewed with the cursor's moves (or a claim once half of it is gone).
        self._lease = HeldLease(db, CURSOR, owner, timedelta(seconds=lease_seconds))
        self._batch_size = batch_size
        self._interval = interval
        self.published = 0
        self._position = 0

    async def run(self, stop: asyncio.Event) -> None:
        while not stop.is_set():
            try:
                count = await self.step()
            except Exception:
                log.exception("status stream: publishing failed; will try again")
                count = 0
                await asyncio.sleep(1.0)
            if count < self._batch_size:
                await asyncio.sleep(self._interval)

    async def step(self) -> int:
        """Publish the next batch if this process holds the stream; returns how many events went out."""
        position = await self._held_position()
        if position is None:
            return 0
        cutoff = datetime.now(UTC) - self._settle
        async with self._db.reading() as conn:
            candidates = await streamed_events_after(conn, position, self._batch_size)
        # Publish only the settled prefix: the cursor moves past an id only when every id before it is out,
        # even if a later event already looks old enough.
        rows = settled_prefix(candidates, lambda row: row.recorded_at, cutoff)
        if not rows:
            return 0
        records = [
            OutgoingRecord(
                topic=self._topics.status,
                key=row.message_id.encode(),
                value=row.value,
                headers=(("message-id", row.message_id.encode()), ("event-type", row.type.encode())),
            )
            for row in rows
        ]
        await self._broker.publish(records)
        until = datetime.now(UTC) + self._lease.seconds
        async with self._db.transaction() as conn:  # moving the cursor renews the lease
            moved = await conn.execute(
                update(stream_cursors)
                .where(stream_cursors.c.name == CURSOR, stream_cursors.c.owner == self._owner)
                .values(position=rows[-1].id, lease_until=until)
            )
        if moved.rowcount:
            self._position, self._lease.until = rows[-1].id, until
        else:  # the lease ran out and another process took the stream: what went out is published twice
            self._lease.until = None
        self.published += len(rows)
        return len(rows)

    async def _held_position(self) -> int | None:
        """The cursor position if this process holds the stream, claiming (or renewing) it when needed."""
        if self._lease.fresh():
            return self._position
        position = await self._claim()
        if position is not None:
            self._position = position
        return position

    async def _claim(self) -> int | None:
        """Take or renew the lease on the stream; the cursor position when this process holds it."""
        return await self._lease.take()
