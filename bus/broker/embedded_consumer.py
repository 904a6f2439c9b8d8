"""A consumer of the embedded broker, and how its consumer groups share work.

One member of a group is active at a time: it holds the group's lease (a ``broker_groups`` row naming the
member, with an expiry and a generation number). The others poll empty-handed and take the lease over when its
holder closes (released at once), dies, or stops polling for ``max_poll_interval`` (the lease then runs out
after ``lease_seconds``) - the roles of Kafka's session timeout and ``max.poll.interval.ms``. While its owner
keeps polling, a background heartbeat renews the lease, so a slow batch does not lose it. Taking the lease
bumps the generation; a commit from an older generation is refused with :class:`ConsumerFenced`, so a member
that stalled cannot move the group's offsets under the new holder.

Leases compare wall-clock times of the processes involved, so members on different machines (PostgreSQL) need
clocks within ``lease_seconds / 2`` of each other. Within one partition records arrive in offset order;
across partitions a poll takes turns so that no partition starves the others.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import re
import time
import uuid
from collections.abc import Sequence
from datetime import UTC, datetime

from sqlalchemy import ColumnElement, or_, select, update
from sqlalchemy.ext.asyncio import AsyncConnection

from docbus.broker.base import BrokerConsumer, BrokerUnavailable, ConsumedRecord, ConsumerFenced, next_offsets
from docbus.broker.embedded_sql import (
    PublishSignal,
    database_bound,
    decode_headers,
    dialect_insert,
    now_ms,
)
from docbus.store.database import Database
from docbus.store.tables import broker_groups, broker_offsets, broker_partitions, broker_records

log = logging.getLogger(__name__)

Partition = tuple[str, int]


class EmbeddedConsumer(BrokerConsumer):
    """A member of an embedded consumer group; made by :meth:`EmbeddedBroker.consumer`."""

    def __init__(
        self,
        db: Database,
        group: str,
        *,
        topics: Sequence[str],
        pattern: str | None,
        signal: PublishSignal,
        lease_seconds: float,
        max_poll_interval: float,
        idle_interval: float,
        timeout: float,
    ) -> None:
        if not topics and pattern is None:
            raise ValueError("a consumer needs topics, a pattern, or both")
        self._db = db
        self._group = group
        self._topics = frozenset(topics)
        self._pattern = re.compile(pattern) if pattern is not None else None
        self._signal = signal
        self._lease_ms = int(lease_seconds * 1000)
        self._max_poll_interval = max_poll_interval
        self._idle_interval = idle_interval
        self._timeout = timeout
        self._member = uuid.uuid4().hex
        self._generation: int | None = None  # set while this member holds the group's lease
        self._lease_until_ms = 0
        self._positions: dict[Partition, int] = {}  # next offset to read, per partition
        self._turn = 0
        self._last_poll = time.monotonic()
        self._heartbeat: asyncio.Task[None] | None = None

    async def start(self) -> None:
        self._start_heartbeat()
        try:
            await self._hold_lease()
        except BrokerUnavailable as exc:
            log.warning("consumer of group %s cannot reach the database yet: %s", self._group, exc)

    async def aclose(self) -> None:
        heartbeat, self._heartbeat = self._heartbeat, None
        if heartbeat is not None:
            heartbeat.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await heartbeat
        if self._generation is None:
            return
        generation, self._generation = self._generation, None
        try:
            async with database_bound("leave group", self._timeout), self._db.transaction() as conn:
                await conn.execute(
                    update(broker_groups).where(self._is_holder(generation)).values(owner=None, lease_expires_ms=0)
                )
        except BrokerUnavailable:
            pass  # the lease runs out by itself

    async def poll(self, max_records: int = 500, timeout: float = 1.0) -> list[ConsumedRecord]:
        if max_records < 1:
            raise ValueError("max_records must be positive")
        self._start_heartbeat()
        self._last_poll = time.monotonic()
        deadline = self._last_poll + timeout
        while True:
            seen = self._signal.version
            records = await self._fetch(max_records)
            remaining = deadline - time.monotonic()
            if records or remaining <= 0:
                return records
            await self._signal.wait(seen, min(self._idle_interval, remaining))

    async def commit(self, records: Sequence[ConsumedRecord]) -> None:
        if not records:
            return
        generation = self._generation
        if generation is None:
            raise ConsumerFenced(f"this member does not hold group {self._group!r}")
        now = now_ms()
        committed_at = datetime.now(UTC)
        async with database_bound("commit", self._timeout), self._db.transaction() as conn:
            held = await conn.execute(
                update(broker_groups).where(self._is_holder(generation)).values(lease_expires_ms=now + self._lease_ms)
            )
            if held.rowcount != 1:
                self._lose_lease()
                raise ConsumerFenced(f"group {self._group!r} moved to another member; records will be redelivered")
            insert = dialect_insert(conn, broker_offsets)
            await conn.execute(
                insert.on_conflict_do_update(
                    index_elements=["group_id", "topic", "partition_index"],
                    set_={
                        "committed_offset": insert.excluded.committed_offset,
                        "committed_at": insert.excluded.committed_at,
                    },
                ),
                [
                    {
                        "group_id": self._group,
                        "topic": topic,
                        "partition_index": partition,
                        "committed_offset": offset,
                        "committed_at": committed_at,
                    }
                    for (topic, partition), offset in sorted(next_offsets(records).items())
                ],
            )
        self._lease_until_ms = now + self._lease_ms

    async def seek_to_committed(self) -> None:
        self._positions.clear()

    async def _fetch(self, max_records: int) -> list[ConsumedRecord]:
        if not await self._hold_lease():
            return []
        async with database_bound("poll", self._timeout), self._db.reader.connect() as conn:
            heads = await self._partition_heads(conn)
            if any(p not in self._positions for p in heads):
                committed = await self._committed(conn)
                for p in heads:
                    self._positions.setdefault(p, committed.get(p, 0))
            ready = sorted(p for p, head in heads.items() if head > self._positions[p])
            if not ready:
                return []
            self._turn += 1
            start = self._turn % len(ready)
            records: list[ConsumedRecord] = []
            for topic, partition in ready[start:] + ready[:start]:
                room = max_records - len(records)
                if room <= 0:
                    break
                batch = await self._read(conn, topic, partition, self._positions[(topic, partition)], room)
                if batch:
                    records.extend(batch)
                    self._positions[(topic, partition)] = batch[-1].offset + 1
            return records

    async def _partition_heads(self, conn: AsyncConnection) -> dict[Partition, int]:
        """The next offset of every partition this consumer subscribes to."""
        query = select(broker_partitions.c.topic, broker_partitions.c.partition_index, broker_partitions.c.next_offset)
        if self._pattern is None:
            query = query.where(broker_partitions.c.topic.in_(sorted(self._topics)))
        pattern = self._pattern
        return {
            (str(topic), int(partition)): int(head)
            for topic, partition, head in await conn.execute(query)
            if topic in self._topics or (pattern is not None and pattern.fullmatch(topic))
        }

    async def _committed(self, conn: AsyncConnection) -> dict[Partition, int]:
        rows = await conn.execute(
            select(broker_offsets.c.topic, broker_offsets.c.partition_index, broker_offsets.c.committed_offset).where(
                broker_offsets.c.group_id == self._group
            )
        )
        return {(str(topic), int(partition)): int(offset) for topic, partition, offset in rows}

    async def _read(
        self, conn: AsyncConnection, topic: str, partition: int, start: int, limit: int
    ) -> list[ConsumedRecord]:
        r = broker_records.c
        rows = await conn.execute(
            select(r.record_offset, r.record_key, r.value, r.headers, r.timestamp_ms)
            .where(r.topic == topic, r.partition_index == partition, r.record_offset >= start)
            .order_by(r.record_offset)
            .limit(limit)
        )
        return [
            ConsumedRecord(
                topic=topic,
                partition=partition,
                offset=int(offset),
                key=None if key is None else bytes(key),
                value=bytes(value),
                headers=decode_headers(headers),
                timestamp_ms=int(timestamp_ms),
            )
            for offset, key, value, headers, timestamp_ms in rows
        ]

    async def _hold_lease(self) -> bool:
        """Hold (renew, or take over) the group's lease; ``False`` while another member holds it."""
        now = now_ms()
        if self._generation is not None and now < self._lease_until_ms - self._lease_ms // 2:
            return True
        g = broker_groups.c
        async with database_bound("group lease", self._timeout):
            if self._generation is None:
                # A standby looks before it asks for the (SQLite: database-wide) write lock.
                async with self._db.reader.connect() as conn:
                    row = (
                        await conn.execute(select(g.owner, g.lease_expires_ms).where(g.group_id == self._group))
                    ).first()
                if row is not None and row.owner is not None and row.lease_expires_ms >= now:
                    return False
            async with self._db.transaction() as conn:
                if self._generation is not None:
                    renewed = await conn.execute(
                        update(broker_groups)
                        .where(self._is_holder(self._generation))
                        .values(lease_expires_ms=now + self._lease_ms)
                    )
                    if renewed.rowcount == 1:
                        self._lease_until_ms = now + self._lease_ms
                        return True
                    self._lose_lease()
                await conn.execute(
                    dialect_insert(conn, broker_groups).on_conflict_do_nothing(index_elements=["group_id"]),
                    {"group_id": self._group, "owner": None, "generation": 0, "lease_expires_ms": 0},
                )
                generation = await conn.scalar(
                    update(broker_groups)
                    .where(g.group_id == self._group, or_(g.owner.is_(None), g.lease_expires_ms < now))
                    .values(owner=self._member, generation=g.generation + 1, lease_expires_ms=now + self._lease_ms)
                    .returning(g.generation)
                )
        if generation is None:
            return False
        # A new holder starts from the group's commits, like a Kafka member after a rebalance.
        self._generation = int(generation)
        self._lease_until_ms = now + self._lease_ms
        self._positions.clear()
        return True

    def _start_heartbeat(self) -> None:
        if self._heartbeat is None:
            self._heartbeat = asyncio.create_task(self._beat(), name=f"lease heartbeat of {self._group}")

    async def _beat(self) -> None:
        """Renew the lease while this member holds it and keeps polling."""
        while True:
            await asyncio.sleep(self._lease_ms / 3000)
            generation = self._generation
            if generation is None or time.monotonic() - self._last_poll > self._max_poll_interval:
                continue
            now = now_ms()
            try:
                async with database_bound("heartbeat", self._timeout), self._db.transaction() as conn:
                    renewed = await conn.execute(
                        update(broker_groups)
                        .where(self._is_holder(generation))
                        .values(lease_expires_ms=now + self._lease_ms)
                    )
            except BrokerUnavailable as exc:
                log.debug("lease heartbeat of group %s failed: %s", self._group, exc)
                continue
            if generation == self._generation:
                # Lost: the next poll finds out from the database and starts over.
                self._lease_until_ms = now + self._lease_ms if renewed.rowcount == 1 else 0

    def _is_holder(self, generation: int) -> ColumnElement[bool]:
        g = broker_groups.c
        return (g.group_id == self._group) & (g.owner == self._member) & (g.generation == generation)

    def _lose_lease(self) -> None:
        self._generation = None
        self._positions.clear()
