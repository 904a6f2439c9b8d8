"""The embedded log's retention on real SQLite and PostgreSQL: old records every reader has committed past are
deleted, nothing a reader still needs is, readers carry on from where they were, and a worker does it by itself."""

from __future__ import annotations

import asyncio
import os
import uuid
from collections.abc import Sequence
from pathlib import Path

import pytest
from sqlalchemy import func, select, update

from docbus.broker import EmbeddedBroker, OutgoingRecord
from docbus.broker.base import ConsumedRecord
from docbus.broker.embedded_retention import EmbeddedLogRetention
from docbus.broker.embedded_sql import now_ms
from docbus.delivery.node import DeliveryNode
from docbus.metrics import EMBEDDED_LOG_TRIMMED
from docbus.runtime import BusRuntime
from docbus.settings import Settings
from docbus.store.database import Database
from docbus.store.migrate import upgrade_async
from docbus.store.tables import broker_records

from .test_broker_contract import drain
from .test_cli import docbus

HOUR_MS = 3_600_000
LATER = HOUR_MS * 2  # "now" for a pass that finds every record older than a one-hour retention


def topic_name() -> str:
    return f"docbus.agency.t{uuid.uuid4().hex[:10]}"


def records(topic: str, count: int, *, key: bytes = b"one-partition", start: int = 0) -> list[OutgoingRecord]:
    return [OutgoingRecord(topic, key, f"v{i}".encode()) for i in range(start, start + count)]


async def offsets_in(db: Database, topic: str) -> list[int]:
    async with db.reader.connect() as conn:
        rows = await conn.execute(
            select(broker_records.c.record_offset)
            .where(broker_records.c.topic == topic)
            .order_by(broker_records.c.record_offset)
        )
        return [int(offset) for (offset,) in rows]


async def consume_and_commit(broker: EmbeddedBroker, group: str, topic: str, count: int) -> Sequence[ConsumedRecord]:
    async with broker.consumer(group, topics=[topic]) as consumer:
        got = await drain(consumer, count)
        assert len(got) >= count
        await consumer.commit(got[:count])
    return got[:count]


async def test_only_what_every_reader_has_committed_past_goes(db: Database) -> None:
    broker = EmbeddedBroker(db)
    topic = topic_name()
    await broker.publish(records(topic, 30))
    await consume_and_commit(broker, "fast", topic, 30)
    await consume_and_commit(broker, "slow", topic, 10)
    before = EMBEDDED_LOG_TRIMMED._value.get()

    report = await EmbeddedLogRetention(db, retention_seconds=3600, batch=7).trim_once(now=now_ms() + LATER)

    assert report.deleted == {(topic, 0): 10}
    assert await offsets_in(db, topic) == list(range(10, 30))
    assert EMBEDDED_LOG_TRIMMED._value.get() - before == 10
    # The slow group carries on from its commit, a new group from the earliest record left, and offsets go on.
    async with broker.consumer("slow", topics=[topic]) as consumer:
        assert [r.offset for r in await drain(consumer, 20)] == list(range(10, 30))
    async with broker.consumer("newcomer", topics=[topic]) as consumer:
        assert [r.offset for r in await drain(consumer, 20)] == list(range(10, 30))
    published = await broker.publish(records(topic, 1, start=30))
    assert published[0].offset == 30


async def test_young_records_stay_and_a_pass_stops_at_the_first_one(db: Database) -> None:
    broker = EmbeddedBroker(db)
    topic = topic_name()
    await broker.publish(records(topic, 10))
    await consume_and_commit(broker, "reader", topic, 10)
    retention = EmbeddedLogRetention(db, retention_seconds=3600)

    assert (await retention.trim_once()).total == 0  # all younger than an hour
    assert await offsets_in(db, topic) == list(range(10))

    old = now_ms() - 2 * HOUR_MS
    async with db.transaction() as conn:
        r = broker_records.c
        await conn.execute(
            update(broker_records)
            .where(r.topic == topic, (r.record_offset < 4) | r.record_offset.in_([6, 7]))
            .values(timestamp_ms=old)
        )
    report = await retention.trim_once()
    assert report.deleted == {(topic, 0): 4}
    assert await offsets_in(db, topic) == list(range(4, 10))


async def test_a_topic_nobody_reads_is_trimmed_by_age_alone(db: Database) -> None:
    broker = EmbeddedBroker(db)
    topic = topic_name()
    await broker.publish(records(topic, 12))
    retention = EmbeddedLogRetention(db, retention_seconds=3600)

    assert (await retention.trim_once()).total == 0
    assert (await retention.trim_once(now=now_ms() + LATER)).deleted == {(topic, 0): 12}
    assert await offsets_in(db, topic) == []
    await broker.publish(records(topic, 1, start=12))
    async with broker.consumer("late", topics=[topic]) as consumer:
        assert [(r.offset, r.value) for r in await drain(consumer, 1)] == [(12, b"v12")]


async def test_a_reader_that_has_not_committed_on_a_partition_keeps_all_of_it(db: Database) -> None:
    broker = EmbeddedBroker(db, partitions=2)
    topic = topic_name()
    first = await broker.publish(records(topic, 5, key=b"a"))
    other_key = next(
        k
        for k in (f"k{i}".encode() for i in range(100))
        if broker._partition_for(OutgoingRecord(topic, k, b""), 2) != first[0].partition
    )
    async with broker.consumer("reader", topics=[topic]) as consumer:
        got = await drain(consumer, 5)
        await consumer.commit(got)
    await broker.publish(records(topic, 6, key=other_key))

    report = await EmbeddedLogRetention(db, retention_seconds=3600).trim_once(now=now_ms() + LATER)

    assert report.deleted == {(topic, first[0].partition): 5}
    async with db.reader.connect() as conn:
        left = await conn.scalar(
            select(func.count()).select_from(broker_records).where(broker_records.c.topic == topic)
        )
    assert left == 6
    async with broker.consumer("reader", topics=[topic]) as consumer:
        assert sorted(r.value for r in await drain(consumer, 6)) == sorted(f"v{i}".encode() for i in range(6))


def test_settings_refuse_nonsense() -> None:
    with pytest.raises(ValueError, match="retention_seconds"):
        EmbeddedLogRetention(None, retention_seconds=0)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="batch"):
        EmbeddedLogRetention(None, retention_seconds=1, batch=0)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="embedded_log_retention_hours"):
        Settings(embedded_log_retention_hours=-1)


async def test_a_worker_trims_by_itself_and_not_when_retention_is_off(tmp_path: Path, database_url: str) -> None:
    await upgrade_async(database_url)
    settings = Settings(
        data_dir=tmp_path / "data",
        database_url=database_url,
        embedded_log_retention_hours=0.5 / 3600,  # half a second
        embedded_log_retention_check_seconds=0.2,
    )
    settings.data_dir.mkdir(parents=True)
    for other in ({"embedded_log_retention_hours": 0}, {"kafka_bootstrap": "127.0.0.1:9"}):
        idle = BusRuntime.build(settings.model_copy(update=other))
        try:
            assert DeliveryNode(idle)._log_retention() is None
        finally:
            await idle.db.dispose()

    runtime = BusRuntime.build(settings)
    await runtime.start()
    node = DeliveryNode(runtime)
    await node.start()
    try:
        topic = topic_name()
        await runtime.broker.publish(records(topic, 8))
        deadline = asyncio.get_running_loop().time() + 15
        while await offsets_in(runtime.db, topic) and asyncio.get_running_loop().time() < deadline:
            await asyncio.sleep(0.1)
        assert await offsets_in(runtime.db, topic) == []
    finally:
        await node.aclose()
        await runtime.aclose()


async def test_log_commands_show_groups_forget_a_retired_one_and_trim(tmp_path: Path) -> None:
    env = {**os.environ, "DOCBUS_DATA_DIR": str(tmp_path / "data"), "DOCBUS_EMBEDDED_LOG_RETENTION_HOURS": "0.0001"}
    for name in ("DOCBUS_DATABASE_URL", "DOCBUS_KAFKA_BOOTSTRAP"):
        env.pop(name, None)
    assert docbus(env, "migrate").returncode == 0
    db = Database(f"sqlite+aiosqlite:///{tmp_path / 'data' / 'docbus.sqlite3'}")
    try:
        broker = EmbeddedBroker(db, group_lease_seconds=30)
        topic = topic_name()
        await broker.publish(records(topic, 10))
        await consume_and_commit(broker, "docbus.deliver.retired", topic, 3)
        async with broker.consumer("docbus.deliver.live", topics=[topic]) as live:
            got = await drain(live, 10)
            await live.commit(got)
            listed = docbus(env, "log", "groups")
            assert listed.returncode == 0, listed.stderr
            assert f"docbus.deliver.retired\t{topic}\t0\t3\t10\t7\t0\t" in listed.stdout
            assert f"docbus.deliver.live\t{topic}\t0\t10\t10\t0\t0\t" in listed.stdout
            await asyncio.sleep(0.5)  # older than the retention

            # The retired group holds the log back: only what it committed past goes.
            trimmed = docbus(env, "log", "trim")
            assert trimmed.returncode == 0, trimmed.stderr
            assert trimmed.stdout.splitlines()[-1] == "3 records deleted"
            held = docbus(env, "log", "forget", "docbus.deliver.live")
            assert held.returncode == 1
            assert "stop that consumer first" in held.stderr

        forgot = docbus(env, "log", "forget", "docbus.deliver.retired")
        assert (forgot.returncode, forgot.stdout.strip()) == (
            0,
            "forgot group docbus.deliver.retired: 1 committed offsets deleted",
        )
        assert docbus(env, "log", "forget", "docbus.deliver.retired").returncode == 1  # nothing left to forget
        assert docbus(env, "log", "trim").stdout.splitlines()[-1] == "7 records deleted"
        assert await offsets_in(db, topic) == []
        listed = docbus(env, "log", "groups").stdout
        assert "retired" not in listed
        assert f"docbus.deliver.live\t{topic}\t0\t10\t10\t0\t-\t" in listed
    finally:
        await db.dispose()
    off = docbus({**env, "DOCBUS_EMBEDDED_LOG_RETENTION_HOURS": "0"}, "log", "trim")
    assert (off.returncode, "retention is off" in off.stdout) == (0, True)
    kafka = docbus({**env, "DOCBUS_KAFKA_BOOTSTRAP": "127.0.0.1:9"}, "log", "groups")
    assert (kafka.returncode, "the log is in Kafka" in kafka.stderr) == (2, True)
