"""Leases on the rows of ``stream_cursors``: one process at a time does a job that must not run twice at once
(publishing the status stream, sweeping a SQLite outbox, a bulk resend of one destination's dead letters), and
another takes over when its holder stops renewing. :class:`HeldLease` is how a holder keeps one while it works.

A row is a cursor (a position in whatever it walks) plus an owner and the time its lease runs out."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from sqlalchemy import and_, insert, or_, select, update
from sqlalchemy.exc import IntegrityError

from docbus.store.database import Database
from docbus.store.tables import stream_cursors


async def take_lease(db: Database, name: str, owner: str, now: datetime, until: datetime) -> int | None:
    """Take or renew the lease on cursor ``name`` until ``until``; its position when ``owner`` holds it now,
    ``None`` while another process holds it."""
    c = stream_cursors.c
    async with db.transaction() as conn:
        claimed = await conn.execute(
            update(stream_cursors)
            .where(and_(c.name == name, or_(c.owner == owner, c.lease_until.is_(None), c.lease_until < now)))
            .values(owner=owner, lease_until=until)
        )
        if claimed.rowcount == 0:
            if await conn.scalar(select(c.name).where(c.name == name)) is not None:
                return None  # another process holds it
            try:
                async with conn.begin_nested():
                    await conn.execute(
                        insert(stream_cursors).values(name=name, position=0, owner=owner, lease_until=until)
                    )
            except IntegrityError:
                return None
        position = await conn.scalar(select(c.position).where(c.name == name))
    return int(position or 0)


async def held_by_another(db: Database, name: str, owner: str, now: datetime) -> bool:
    """Whether another process holds the lease on ``name`` (a read: a standby looks before it takes the write
    lock to ask)."""
    c = stream_cursors.c
    async with db.reader.connect() as conn:
        row = (await conn.execute(select(c.owner, c.lease_until).where(c.name == name))).first()
    if row is None or row.owner is None or row.owner == owner or row.lease_until is None:
        return False
    lease_until: datetime = row.lease_until
    if lease_until.tzinfo is None:  # SQLite keeps UTC without an offset
        lease_until = lease_until.replace(tzinfo=now.tzinfo)
    return lease_until >= now


async def give_up_lease(db: Database, name: str, owner: str) -> None:
    """Let the next process take over at once instead of waiting for the lease to run out."""
    async with db.transaction() as conn:
        await conn.execute(
            update(stream_cursors)
            .where(stream_cursors.c.name == name, stream_cursors.c.owner == owner)
            .values(owner=None, lease_until=None)
        )


class HeldLease:
    """One process' hold on a lease row while it works: taken with a write, then renewed only once half of it has
    gone, so a holder working steadily pays one small transaction per half lease instead of one per step.

    ``until`` is when the hold runs out as far as this process knows; a holder that renews the row itself (the
    status stream moves its cursor and the lease in one update) sets it, and clears it when the row was lost.
    ``look_first``: a process that only stands by reads whether another holds the lease before it asks for the
    write lock (see :func:`held_by_another`)."""

    def __init__(self, db: Database, name: str, owner: str, seconds: timedelta, *, look_first: bool = False) -> None:
        self.db, self.name, self.owner, self.seconds = db, name, owner, seconds
        self.look_first = look_first
        self.until: datetime | None = None

    def fresh(self) -> bool:
        """Held, with more than half of the lease left: no write needed yet."""
        return self.until is not None and self.until - datetime.now(UTC) > self.seconds / 2

    async def take(self) -> int | None:
        """Take or renew the lease now (a write); the cursor's position while this process holds it."""
        now = datetime.now(UTC)
        position = await take_lease(self.db, self.name, self.owner, now, now + self.seconds)
        self.until = now + self.seconds if position is not None else None
        return position

    async def hold(self) -> bool:
        """Whether this process holds the lease, renewing it once half of it has gone."""
        if self.fresh():
            return True
        if self.look_first and await held_by_another(self.db, self.name, self.owner, datetime.now(UTC)):
            self.until = None
            return False
        return await self.take() is not None

    async def release(self) -> None:
        """Let the next process take over at once (when this one holds the lease)."""
        if self.until is not None:
            self.until = None
            await give_up_lease(self.db, self.name, self.owner)
