"""The embedded broker: a durable, partitioned log in the bus's own SQL database (SQLite or PostgreSQL).

Zero setup and the default when ``DOCBUS_KAFKA_BOOTSTRAP`` is unset. Connection string: the database's own
(``DOCBUS_DATABASE_URL``, SQLite file under ``DOCBUS_DATA_DIR`` by default); tables ``broker_*`` come with the
store's migrations.

- One transaction per ``publish`` call, committed (fsync'd) before it returns; offsets are dense per partition
  and assigned inside that transaction by bumping the partition's ``next_offset`` row, which also orders
  concurrent publishers to one partition.
- Partition = CRC-32 of the key modulo the topic's partitions (keyless records go round-robin).
- Consumers read ranges by primary key; a publish wakes consumers in the same process at once, other
  processes see new records within ``idle_interval``.
- A consumer group has one active member at a time (see :mod:`docbus.broker.embedded_consumer`).
"""

from __future__ import annotations

import itertools
import zlib
from collections import Counter
from collections.abc import Awaitable, Callable, Sequence
from datetime import UTC, datetime

from sqlalchemy import select, update
from sqlalchemy.ext.asyncio import AsyncConnection

from docbus.broker.base import Broker, BrokerConsumer, OutgoingRecord, PublishedRecord, check_topic_name
from docbus.broker.embedded_consumer import EmbeddedConsumer
from docbus.broker.embedded_sql import database_bound, dialect_insert, encode_headers, now_ms, signal_for
from docbus.store.database import Database
from docbus.store.tables import broker_partitions, broker_records, broker_topics


class EmbeddedBroker(Broker):
    """A :class:`Broker` whose log lives in ``db``; see the module docstring for how it behaves."""

    def __init__(
        self,
        db: Database,
        *,
        partitions: int = 1,
        publish_timeout: float = 10.0,
        ping_timeout: float = 2.0,
        group_lease_seconds: float = 10.0,
        max_poll_interval: float = 300.0,
        idle_interval: float = 0.2,
    ) -> None:
        if partitions < 1:
            raise ValueError("a topic needs at least one partition")
        self._db = db
        self._partitions = partitions
        self._publish_timeout = publish_timeout
        self._ping_timeout = ping_timeout
        self._group_lease_seconds = group_lease_seconds
        self._max_poll_interval = max_poll_interval
        self._idle_interval = idle_interval
        self._signal = signal_for(db)
        self._topic_partitions: dict[str, int] = {}  # topics known to exist, with their partition counts
        self._round_robin = itertools.count()

    async def ensure_topics(self, topics: Sequence[str]) -> None:
        if all(t in self._topic_partitions for t in topics):
            return
        async with database_bound("ensure_topics", self._publish_timeout), self._db.transaction() as conn:
            found = await self._create_missing(conn, topics)
        self._topic_partitions.update(found)

    async def publish(self, records: Sequence[OutgoingRecord]) -> list[PublishedRecord]:
        return await self.publish_then(records, None)

    async def publish_then(
        self,
        records: Sequence[OutgoingRecord],
        then: Callable[[AsyncConnection, list[PublishedRecord]], Awaitable[None]] | None,
    ) -> list[PublishedRecord]:
        """Publish, and run ``then`` in the same transaction: the log lives in the caller's database, so the
        outbox relay marks its rows published atomically with the records (exactly once, one commit)."""
        if not records:
            return []
        for topic in {r.topic for r in records}:
            check_topic_name(topic)
        async with database_bound("publish", self._publish_timeout), self._db.transaction() as conn:
            found = await self._create_missing(conn, [r.topic for r in records])
            counts = {**self._topic_partitions, **found}
            partitions = [self._partition_for(r, counts[r.topic]) for r in records]
            bases = await self._reserve_offsets(conn, [(r.topic, p) for r, p in zip(records, partitions, strict=True)])
            published: list[PublishedRecord] = []
            rows = []
            timestamp = now_ms()
            for record, partition in zip(records, partitions, strict=True):
                offset = bases[(record.topic, partition)]
                bases[(record.topic, partition)] = offset + 1
                published.append(PublishedRecord(record.topic, partition, offset))
                rows.append(
                    {
                        "topic": record.topic,
                        "partition_index": partition,
                        "record_offset": offset,
                        "record_key": record.key,
                        "value": record.value,
                        "headers": encode_headers(record.headers),
                        "timestamp_ms": timestamp,
                    }
                )
            await conn.execute(broker_records.insert(), rows)
            if then is not None:
                await then(conn, published)
        # Only a committed transaction proves the topics exist.
        self._topic_partitions.update(found)
        self._signal.fire()
        return published

    def shares_database(self, db: Database) -> bool:
        return self._db is db

    async def ping(self) -> None:
        async with database_bound("ping", self._ping_timeout), self._db.reader.connect() as conn:
            await conn.execute(select(broker_topics.c.name).limit(1))

    def consumer(
        self, group: str, *, topics: Sequence[str] = (), pattern: str | None = None, patience: float = 0.0
    ) -> BrokerConsumer:
        # ``patience`` is for Kafka's fetches; a read here is one query whatever it finds.
        return EmbeddedConsumer(
            self._db,
            group,
            topics=topics,
            pattern=pattern,
            signal=self._signal,
            lease_seconds=self._group_lease_seconds,
            max_poll_interval=self._max_poll_interval,
            idle_interval=self._idle_interval,
            timeout=self._publish_timeout,
        )

    def _partition_for(self, record: OutgoingRecord, partitions: int) -> int:
        if partitions == 1:
            return 0
        if record.key is None:
            return next(self._round_robin) % partitions
        return zlib.crc32(record.key) % partitions

    async def _create_missing(self, conn: AsyncConnection, topics: Sequence[str]) -> dict[str, int]:
        """Create the topics this process does not know yet; their partition counts (the stored ones win)."""
        missing = sorted({t for t in topics if t not in self._topic_partitions})
        if not missing:
            return {}
        for topic in missing:
            check_topic_name(topic)
        created_at = datetime.now(UTC)
        await conn.execute(
            dialect_insert(conn, broker_topics).on_conflict_do_nothing(index_elements=["name"]),
            [{"name": t, "partitions": self._partitions, "created_at": created_at} for t in missing],
        )
        rows = await conn.execute(
            select(broker_topics.c.name, broker_topics.c.partitions).where(broker_topics.c.name.in_(missing))
        )
        found = {str(name): int(count) for name, count in rows}
        await conn.execute(
            dialect_insert(conn, broker_partitions).on_conflict_do_nothing(index_elements=["topic", "partition_index"]),
            [{"topic": t, "partition_index": p, "next_offset": 0} for t, count in found.items() for p in range(count)],
        )
        return found

    async def _reserve_offsets(
        self, conn: AsyncConnection, targets: Sequence[tuple[str, int]]
    ) -> dict[tuple[str, int], int]:
        """Take consecutive offsets for ``targets`` (one per record); the first offset of each partition.

        Rows are locked in a fixed order, so two publishers that share partitions cannot deadlock.
        """
        bases: dict[tuple[str, int], int] = {}
        for (topic, partition), count in sorted(Counter(targets).items()):
            next_offset = await conn.scalar(
                update(broker_partitions)
                .where(broker_partitions.c.topic == topic, broker_partitions.c.partition_index == partition)
                .values(next_offset=broker_partitions.c.next_offset + count)
                .returning(broker_partitions.c.next_offset)
            )
            if next_offset is None:
                raise LookupError(f"partition {partition} of topic {topic!r} is missing from broker_partitions")
            bases[(topic, partition)] = int(next_offset) - count
        return bases
