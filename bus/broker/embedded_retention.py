"""Retention for the embedded broker's log: what no consumer needs any more is deleted, so the default deployment's
database does not grow with every message it ever carried.

Kafka deletes a topic's segments by age (``retention.ms``) whether or not anyone has read them. The embedded log
keeps Kafka's rule for topics nobody in the database reads (``<prefix>.status`` when it is published there, the
dead-letter topics, whose contents are also in ``dead_letters``), and is stricter where someone does: a record is
deleted only once it is older than the retention **and** every consumer group that has committed an offset on
its topic has committed past it. A destination whose worker is stopped for longer than the retention therefore
still finds its backlog when it returns; its records go only after it has read them.

A group that subscribes by pattern counts for a topic from its first commit there; a topic made after the group
last ran is trimmed by age alone until then (its records are also still in ``messages`` and ``payloads``, which
retention never touches). Deleting frees pages inside the SQLite file, which later writes reuse; the file itself
does not shrink (``VACUUM`` while stopped does that).

Deletes run in transactions of at most ``batch`` records each, with a pause between them, so intake's group
commits, which need the same write lock on SQLite, wait for one short transaction at a time, never for the whole
backlog: deleting 100,000 records of 10 KB from a SQLite file took 500 transactions of 11 ms (median; 16 ms at
most) with the default 200, against 53 ms each with 1,000 (``tests/benchmark/retention_bench.py``).
"""

from __future__ import annotations

import asyncio
from collections import defaultdict
from dataclasses import dataclass

from sqlalchemy import delete, func, select

from docbus.broker.embedded_sql import now_ms
from docbus.metrics import EMBEDDED_LOG_TRIMMED
from docbus.periodic import Retention
from docbus.store.database import Database
from docbus.store.tables import broker_offsets, broker_partitions, broker_records

Partition = tuple[str, int]


@dataclass(frozen=True)
class TrimReport:
    """What one pass deleted, per partition (only partitions that lost records)."""

    deleted: dict[Partition, int]

    @property
    def total(self) -> int:
        return sum(self.deleted.values())


class EmbeddedLogRetention(Retention):
    """Deletes consumed records older than ``retention_seconds``; ``run`` does it every ``interval_seconds``."""

    what = "embedded log retention"

    def __init__(
        self,
        db: Database,
        *,
        retention_seconds: float,
        interval_seconds: float = 300.0,
        batch: int = 200,
        pause_seconds: float = 0.005,
    ) -> None:
        super().__init__(
            retention_seconds=retention_seconds,
            interval_seconds=interval_seconds,
            batch=batch,
            pause_seconds=pause_seconds,
        )
        self._db = db

    async def _pass(self) -> str | None:
        report = await self.trim_once()
        return f"deleted {report.total} consumed records older than the retention" if report.total else None

    async def trim_once(self, *, now: int | None = None) -> TrimReport:
        """One pass over every partition; ``now`` (ms since the epoch) is for tests."""
        cutoff = (now_ms() if now is None else now) - self._retention_ms
        bounds = await self._consumed_bounds()
        deleted: dict[Partition, int] = {}
        for (topic, partition), bound in sorted(bounds.items()):
            count = await self._trim_partition(topic, partition, bound, cutoff)
            if count:
                deleted[(topic, partition)] = count
                EMBEDDED_LOG_TRIMMED.inc(count)
        return TrimReport(deleted)

    async def _consumed_bounds(self) -> dict[Partition, int]:
        """Per partition, the first offset some reader of its topic still needs (the partition's end when the
        topic has no reader): records below it may go once they are old enough."""
        async with self._db.reader.connect() as conn:
            heads = {
                (str(t), int(p)): int(n)
                for t, p, n in await conn.execute(
                    select(
                        broker_partitions.c.topic, broker_partitions.c.partition_index, broker_partitions.c.next_offset
                    )
                )
            }
            committed: dict[str, dict[str, dict[int, int]]] = defaultdict(lambda: defaultdict(dict))
            for group, t, p, offset in await conn.execute(
                select(
                    broker_offsets.c.group_id,
                    broker_offsets.c.topic,
                    broker_offsets.c.partition_index,
                    broker_offsets.c.committed_offset,
                )
            ):
                committed[str(t)][str(group)][int(p)] = int(offset)
        bounds: dict[Partition, int] = {}
        for (topic, partition), head in heads.items():
            readers = committed.get(topic)
            if not readers:
                bounds[(topic, partition)] = head
            else:
                # A group that reads the topic but has not committed on this partition needs all of it.
                bounds[(topic, partition)] = min(offsets.get(partition, 0) for offsets in readers.values())
        return bounds

    async def _trim_partition(self, topic: str, partition: int, bound: int, cutoff: int) -> int:
        """Delete from the partition's start, one window of ``batch`` offsets a transaction, up to ``bound`` or
        the first record still too young, whichever comes first. Each window is read where it is deleted, so a
        long backlog is never scanned ahead in one long read (which on SQLite would also hold the WAL back)."""
        r = broker_records.c
        in_partition = (r.topic == topic, r.partition_index == partition)
        async with self._db.reader.connect() as conn:
            first = await conn.scalar(select(func.min(r.record_offset)).where(*in_partition))
        if first is None or first >= bound:
            return 0
        total = 0
        start = int(first)
        while start < bound:
            stop = min(start + self._batch, bound)
            async with self._db.transaction() as conn:
                young = await conn.scalar(
                    select(func.min(r.record_offset)).where(
                        *in_partition, r.record_offset >= start, r.record_offset < stop, r.timestamp_ms > cutoff
                    )
                )
                end = stop if young is None else int(young)
                result = await conn.execute(
                    delete(broker_records).where(*in_partition, r.record_offset >= start, r.record_offset < end)
                )
            total += int(result.rowcount or 0)
            if young is not None:
                return total
            start = stop
            await asyncio.sleep(self._pause)  # intake's writer takes the lock between windows
        return total
