"""The broker contract, run on every implementation: the embedded broker on SQLite and on a real PostgreSQL,
and a real Apache Kafka (``DOCBUS_TEST_KAFKA_BOOTSTRAP``), also through its SASL_SSL listener (SCRAM-SHA-512
over TLS, as a production cluster asks of its clients). Every test uses its own topics and groups."""

from __future__ import annotations

import asyncio
import os
import re
import time
import uuid
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import pytest

import docbus.broker
from docbus.broker import (
    Broker,
    BrokerConsumer,
    BrokerUnavailable,
    ConsumedRecord,
    ConsumerFenced,
    EmbeddedBroker,
    KafkaBroker,
    OutgoingRecord,
    PublishedRecord,
    RecordRejected,
)
from docbus.broker.partitioner import default_partition
from docbus.store.database import Database
from docbus.store.migrate import upgrade_async

from ..conftest import fresh_postgres_database, require_service
from .kafka_support import KafkaCluster, secure_kafka_settings


def kafka_bootstrap() -> str:
    return require_service("DOCBUS_TEST_KAFKA_BOOTSTRAP", "Apache Kafka")


@pytest.fixture(
    params=[
        "embedded-sqlite",
        pytest.param("embedded-postgres", marks=pytest.mark.postgres),
        pytest.param("kafka", marks=pytest.mark.kafka),
        pytest.param("kafka-sasl-ssl", marks=pytest.mark.kafka),
    ]
)
async def broker(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[Broker]:
    db: Database | None = None
    implementation: Broker
    if request.param == "kafka":
        implementation = KafkaBroker(kafka_bootstrap(), partitions=3, topic_refresh_interval=1.0)
    elif request.param == "kafka-sasl-ssl":
        settings = secure_kafka_settings()
        assert settings.kafka_bootstrap is not None
        implementation = KafkaBroker(
            settings.kafka_bootstrap, partitions=3, topic_refresh_interval=1.0, security=settings.kafka_security()
        )
    else:
        if request.param == "embedded-sqlite":
            url = f"sqlite+aiosqlite:///{tmp_path / 'broker.sqlite3'}"
        else:
            url = await fresh_postgres_database()
        await upgrade_async(url)
        db = Database(url)
        implementation = EmbeddedBroker(db, partitions=3)
    await implementation.start()
    try:
        yield implementation
    finally:
        await implementation.aclose()
        if db is not None:
            await db.dispose()


def new_topic() -> str:
    return f"docbus.test.{uuid.uuid4().hex[:12]}"


def new_group() -> str:
    return f"docbus.test-group.{uuid.uuid4().hex[:12]}"


def outgoing(topic: str, n: int, *, start: int = 0, key: bytes | None = None, size: int = 32) -> list[OutgoingRecord]:
    return [
        OutgoingRecord(topic, key if key is not None else f"k{i}".encode(), f"v{i}".encode().ljust(size, b"."))
        for i in range(start, start + n)
    ]


def position(record: ConsumedRecord | PublishedRecord) -> tuple[str, int, int]:
    return (record.topic, record.partition, record.offset)


async def drain(consumer: BrokerConsumer, expected: int, *, within: float = 30.0) -> list[ConsumedRecord]:
    """Poll until ``expected`` records came (or ``within`` seconds passed), then once more to catch extras."""
    got: list[ConsumedRecord] = []
    deadline = time.monotonic() + within
    while len(got) < expected and time.monotonic() < deadline:
        got += await consumer.poll(max_records=500, timeout=0.5)
    got += await consumer.poll(max_records=500, timeout=0.3)
    return got


async def test_publish_returns_partition_and_offset_in_input_order(broker: Broker) -> None:
    topic = new_topic()
    first = await broker.publish(outgoing(topic, 30))
    assert len(first) == 30
    assert {r.topic for r in first} == {topic}
    assert {r.partition for r in first} <= {0, 1, 2}
    assert len({r.partition for r in first}) > 1, "30 distinct keys should spread over the 3 partitions"
    # Dense per partition, in input order, from 0 on a new topic, then continuing.
    for partition in {r.partition for r in first}:
        offsets = [r.offset for r in first if r.partition == partition]
        assert offsets == list(range(len(offsets)))
    second = await broker.publish(outgoing(topic, 30))  # same keys: same partitions
    assert [r.partition for r in second] == [r.partition for r in first]
    for partition in {r.partition for r in first}:
        before = sum(1 for r in first if r.partition == partition)
        offsets = [r.offset for r in second if r.partition == partition]
        assert offsets == list(range(before, before + len(offsets)))
    assert await broker.publish([]) == []


async def test_concurrent_publishers_get_distinct_dense_offsets(broker: Broker) -> None:
    topic = new_topic()  # created by whichever publisher comes first
    batches = await asyncio.gather(*(broker.publish(outgoing(topic, 25, start=i * 25)) for i in range(8)))
    published = [r for batch in batches for r in batch]
    assert len({position(r) for r in published}) == 200
    for partition in {r.partition for r in published}:
        offsets = sorted(r.offset for r in published if r.partition == partition)
        assert offsets == list(range(len(offsets)))


async def test_same_key_keeps_order_in_one_partition(broker: Broker) -> None:
    topic = new_topic()
    published: list[PublishedRecord] = []
    for call in range(5):
        published += await broker.publish(outgoing(topic, 10, start=call * 10, key=b"doc-1"))
    assert len({r.partition for r in published}) == 1
    assert [r.offset for r in published] == sorted(r.offset for r in published)
    async with broker.consumer(new_group(), topics=[topic]) as consumer:
        got = await drain(consumer, 50)
    assert [r.value.rstrip(b".") for r in got] == [f"v{i}".encode() for i in range(50)]


async def test_new_group_reads_everything_once_from_the_earliest(broker: Broker) -> None:
    topic = new_topic()
    published = await broker.publish(outgoing(topic, 100))
    async with broker.consumer(new_group(), topics=[topic]) as consumer:
        got = await drain(consumer, 100)
    assert len(got) == 100
    assert {position(r) for r in got} == {position(r) for r in published}
    assert {r.key for r in got} == {f"k{i}".encode() for i in range(100)}


async def test_a_patient_consumer_still_gets_a_trickle_in_order(broker: Broker) -> None:
    """``patience`` lets Kafka hold a fetch until it has a megabyte or the patience is over: records far short
    of that still arrive (after the wait), every one, in order per key; and on Kafka four bursts published 0.1 s
    apart come in one or two hand-overs, where a consumer without patience gets each burst on its own."""
    topic = new_topic()
    await broker.publish(outgoing(topic, 1))
    async with broker.consumer(new_group(), topics=[topic], patience=2.0) as consumer:
        got = await drain(consumer, 1)

        async def bursts() -> None:
            for burst in range(4):
                await broker.publish(outgoing(topic, 10, start=1 + burst * 10, key=b"doc-1"))
                await asyncio.sleep(0.1)

        publishing = asyncio.create_task(bursts())  # polled while they come
        handovers = 0
        deadline = time.monotonic() + 30
        while len(got) < 41 and time.monotonic() < deadline:
            polled = await consumer.poll(max_records=500, timeout=0.05)
            handovers += bool(polled)
            got += polled
        await publishing
        got += await consumer.poll(max_records=500, timeout=0.3)  # nothing more may come
    assert sorted(r.value.rstrip(b".") for r in got) == sorted(f"v{i}".encode() for i in range(41))
    in_order = [r.value.rstrip(b".") for r in got if r.key == b"doc-1"]
    assert in_order == [f"v{i}".encode() for i in range(1, 41)]
    if isinstance(broker, KafkaBroker):
        assert handovers <= 2, f"the 40 records came in {handovers} hand-overs: the broker did not hold the fetch"


async def test_a_new_member_resumes_after_the_groups_commit(broker: Broker) -> None:
    topic, group = new_topic(), new_group()
    await broker.publish(outgoing(topic, 20))
    async with broker.consumer(group, topics=[topic]) as consumer:
        first = await drain(consumer, 20)
        await consumer.commit(first)
    assert len(first) == 20
    await broker.publish(outgoing(topic, 10, start=20))
    async with broker.consumer(group, topics=[topic]) as consumer:
        rest = await drain(consumer, 10)
    assert sorted(r.key or b"" for r in rest) == sorted(f"k{i}".encode() for i in range(20, 30))


async def test_uncommitted_records_come_again(broker: Broker) -> None:
    topic, group = new_topic(), new_group()
    await broker.publish(outgoing(topic, 10, key=b"one-partition"))
    async with broker.consumer(group, topics=[topic]) as consumer:
        got = await drain(consumer, 10)
        assert [r.offset for r in got] == list(range(10))
        await consumer.seek_to_committed()
        again = await drain(consumer, 10)
        assert [position(r) for r in again] == [position(r) for r in got]
        await consumer.commit(again[:4])
    # A restart (a new member of the group) starts right after the commit.
    async with broker.consumer(group, topics=[topic]) as consumer:
        rest = await drain(consumer, 6)
    assert [r.offset for r in rest] == list(range(4, 10))


async def test_a_pattern_picks_up_topics_created_later(broker: Broker) -> None:
    prefix = f"docbus.test.{uuid.uuid4().hex[:12]}."
    async with broker.consumer(new_group(), pattern=re.escape(prefix) + r"late\d") as consumer:
        assert await consumer.poll(timeout=0.5) == []
        await broker.publish(outgoing(prefix + "late1", 3))
        # Not a whole-name match, and not matching at all:
        await broker.publish(outgoing(prefix + "late12", 2) + outgoing(prefix + "early", 2))
        got = await drain(consumer, 3)
    assert sorted((r.topic, r.key) for r in got) == [(prefix + "late1", f"k{i}".encode()) for i in range(3)]


async def test_headers_and_binary_values_round_trip(broker: Broker) -> None:
    topic = new_topic()
    sent = [
        OutgoingRecord(topic, None, bytes(range(256)), (("message-id", b"01JDX"), ("raw", bytes([0, 255, 128])))),
        OutgoingRecord(topic, b"\x00\xff\x80", b"", (("dup", b"1"), ("dup", b"2"), ("empty", b""))),
        OutgoingRecord(topic, "khóa-đơn-vị".encode(), "Công văn số 12/UBND".encode(), ()),
    ]
    before = time.time() * 1000
    await broker.publish(sent)
    after = time.time() * 1000
    async with broker.consumer(new_group(), topics=[topic]) as consumer:
        got = await drain(consumer, 3)
    assert sorted((r.key or b"", r.value, r.headers) for r in got) == sorted(
        (r.key or b"", r.value, r.headers) for r in sent
    )
    assert [r.key for r in got if r.value == bytes(range(256))] == [None]
    assert all(before - 1000 <= r.timestamp_ms <= after + 1000 for r in got)


async def test_five_thousand_records_of_ten_kilobytes(broker: Broker) -> None:
    topic = new_topic()
    filler = os.urandom(5 * 1024).hex().encode()  # 10 KB, like a small edXML message
    published: list[PublishedRecord] = []
    for start in range(0, 5000, 500):
        batch = [OutgoingRecord(topic, f"doc-{i}".encode(), filler) for i in range(start, start + 500)]
        published += await broker.publish(batch)
    assert len({position(r) for r in published}) == 5000
    async with broker.consumer(new_group(), topics=[topic]) as consumer:
        got = await drain(consumer, 5000, within=60)
    assert len(got) == 5000
    assert {r.key for r in got} == {f"doc-{i}".encode() for i in range(5000)}
    assert all(r.value == filler for r in got)


async def test_each_published_position_holds_that_record(broker: Broker) -> None:
    """One publish over two topics, a record without a key among them, and more than a megabyte per partition
    (Kafka fills several batches per partition): every position returned holds the very record published there,
    and on Kafka a key's partition is the one the Java client picks (murmur2)."""
    topics = [new_topic(), new_topic()]
    filler = os.urandom(6 * 1024).hex().encode()  # 12 KB: 400 of them fill each of 3 partitions past 1 MiB
    records = [
        OutgoingRecord(
            topics[i % 2] if i % 5 else topics[0],
            None if i == 7 else f"doc-{i % 60}".encode(),
            f"{i}:".encode() + filler,
            (("seq", str(i).encode()),),
        )
        for i in range(400)
    ]
    published = await broker.publish(records)
    assert len(published) == len(records) and len({position(r) for r in published}) == len(records)
    for record, placed in zip(records, published, strict=True):
        assert placed.topic == record.topic
        if record.key is not None and isinstance(broker, KafkaBroker):
            assert placed.partition == default_partition(record.key, [0, 1, 2], [0, 1, 2])
    found: dict[tuple[str, int, int], ConsumedRecord] = {}
    async with broker.consumer(new_group(), topics=topics) as consumer:
        for got in await drain(consumer, len(records), within=60):
            found[position(got)] = got
    assert len(found) == len(records)
    for record, placed in zip(records, published, strict=True):
        got = found[position(placed)]
        assert (got.key, got.value, got.headers) == (record.key, record.value, record.headers)


async def test_members_of_one_group_share_the_work(broker: Broker) -> None:
    """Every record is committed by exactly one member; a refused commit means another member gets it again."""
    topic, group = new_topic(), new_group()
    await broker.ensure_topics([topic])
    async with broker.consumer(group, topics=[topic]) as a, broker.consumer(group, topics=[topic]) as b:
        for _ in range(3):  # let both join before anything is published
            await a.poll(timeout=0.3)
            await b.poll(timeout=0.3)
        published = await broker.publish(outgoing(topic, 60))
        committed: list[ConsumedRecord] = []
        deadline = time.monotonic() + 30
        while len(committed) < 60 and time.monotonic() < deadline:
            for member in (a, b):
                records = await member.poll(timeout=0.3)
                try:
                    await member.commit(records)
                except ConsumerFenced:
                    continue
                committed += records
    assert sorted(position(r) for r in committed) == sorted(position(r) for r in published)


async def test_topics_are_ensured_idempotently_and_ping_answers(broker: Broker) -> None:
    topics = [new_topic(), new_topic()]
    await broker.ensure_topics(topics)
    await broker.ensure_topics(topics)
    await broker.ensure_topics([])
    await broker.ping()
    published = await broker.publish(outgoing(topics[0], 9))
    assert {r.partition for r in published} <= {0, 1, 2}


async def test_an_invalid_topic_name_is_rejected(broker: Broker) -> None:
    with pytest.raises(RecordRejected):
        await broker.publish(outgoing("docbus.test.no spaces/allowed", 1))


@pytest.mark.kafka
async def test_kafka_refuses_a_record_no_request_can_carry_and_goes_on() -> None:
    broker = KafkaBroker(kafka_bootstrap(), partitions=3)  # requests of at most 1 MiB
    await broker.start()
    try:
        topic = new_topic()
        small = outgoing(topic, 3)
        with pytest.raises(RecordRejected, match="larger than the largest request"):
            await broker.publish([*small, OutgoingRecord(topic, b"big", os.urandom(1024 * 1024 + 1))])
        assert await broker.publish(small)
        async with broker.consumer(new_group(), topics=[topic]) as consumer:
            got = await drain(consumer, 3)
        assert sorted(r.value for r in got) == sorted(r.value for r in small)  # nothing of the refused publish
    finally:
        await broker.aclose()


@pytest.mark.kafka
async def test_a_kafka_member_that_cannot_leave_in_time_still_closes_its_connections() -> None:
    """A member whose LeaveGroup the broker never answers gives up after its bound and still closes everything
    (an interrupted aiokafka ``stop`` would leave the connections and the heartbeats running)."""
    broker = KafkaBroker(kafka_bootstrap(), partitions=1, publish_timeout=1.0)
    topic = new_topic()
    try:
        await broker.publish(outgoing(topic, 2))
        consumer = broker.consumer(new_group(), topics=[topic])
        await consumer.start()
        assert len(await drain(consumer, 2)) == 2
        inner = consumer._consumer  # type: ignore[attr-defined]
        coordinator = inner._coordinator
        assert [c for c in inner._client._conns.values() if c.connected()]

        async def never_answered() -> None:
            await asyncio.sleep(3600)

        coordinator._maybe_leave_group = never_answered
        started = time.monotonic()
        await consumer.aclose()
        assert time.monotonic() - started < 5.0
        assert [c for c in inner._client._conns.values() if c.connected()] == []
        assert coordinator._coordination_task.done()
        assert coordinator._heartbeat_task is None or coordinator._heartbeat_task.done()
        await asyncio.sleep(0.5)
        assert [c for c in inner._client._conns.values() if c.connected()] == []  # and nothing reconnected
    finally:
        await broker.aclose()


# ------------------------------------------------------------------------------------- embedded broker only --


async def test_embedded_group_has_one_active_member_that_keeps_it_while_polling(db: Database) -> None:
    broker = EmbeddedBroker(db, partitions=2, group_lease_seconds=0.3)
    topic, group = new_topic(), new_group()
    await broker.publish(outgoing(topic, 10))
    async with broker.consumer(group, topics=[topic]) as active, broker.consumer(group, topics=[topic]) as standby:
        got = await drain(active, 10)
        assert len(got) == 10
        # Three lease lengths of slow processing: the heartbeat keeps the group with the active member.
        for _ in range(3):
            assert await standby.poll(timeout=0.3) == []
        await active.commit(got)
    # Leaving releases the lease at once: a new member starts immediately, after the commit.
    await broker.publish(outgoing(topic, 1, start=10))
    async with broker.consumer(group, topics=[topic]) as newcomer:
        assert [r.key for r in await drain(newcomer, 1, within=2)] == [b"k10"]


async def test_embedded_group_moves_on_from_a_stalled_member_and_fences_it(db: Database) -> None:
    broker = EmbeddedBroker(db, partitions=2, group_lease_seconds=0.3, max_poll_interval=0.2)
    topic, group = new_topic(), new_group()
    await broker.publish(outgoing(topic, 10))
    async with broker.consumer(group, topics=[topic]) as active, broker.consumer(group, topics=[topic]) as standby:
        got = await drain(active, 10)
        await asyncio.sleep(0.8)  # the active member stops polling...
        taken_over = await drain(standby, 10)  # ...so the standby takes over from the last commit
        assert {position(r) for r in taken_over} == {position(r) for r in got}
        with pytest.raises(ConsumerFenced):
            await active.commit(got)
        await standby.commit(taken_over)
        assert await active.poll(timeout=0.3) == []  # it is a standby now


# ---------------------------------------------------------------------------------------------- Kafka only --


@pytest.fixture
def own_kafka(tmp_path: Path) -> Iterator[KafkaCluster]:
    """A single-broker Kafka that this test may stop and start."""
    kafka_bootstrap()
    cluster = KafkaCluster(tmp_path / "kafka")
    cluster.start()
    try:
        yield cluster
    finally:
        cluster.stop()


@pytest.mark.kafka
@pytest.mark.slow
async def test_kafka_outage_is_reported_in_time_and_the_same_broker_recovers(own_kafka: KafkaCluster) -> None:
    bootstrap = own_kafka.bootstrap
    topic = new_topic()
    broker = KafkaBroker(bootstrap, partitions=1, publish_timeout=3.0, ping_timeout=2.0)
    try:
        before = await broker.publish(outgoing(topic, 5))
        await asyncio.to_thread(own_kafka.stop_broker, 1)

        started = time.monotonic()
        with pytest.raises(BrokerUnavailable):
            await broker.publish(outgoing(topic, 5, start=5))
        assert time.monotonic() - started < 3.0 + 1.5
        started = time.monotonic()
        with pytest.raises(BrokerUnavailable):
            await broker.ping()
        assert time.monotonic() - started < 2.0 + 1.0

        await asyncio.to_thread(own_kafka.start_broker, 1)
        after: list[PublishedRecord] = []
        deadline = time.monotonic() + 60
        while not after:
            try:
                after = await broker.publish(outgoing(topic, 5, start=10))
            except BrokerUnavailable:
                assert time.monotonic() < deadline, "the broker did not recover within 60 s of Kafka's return"
                await asyncio.sleep(1)
        await broker.ping()
    finally:
        await broker.aclose()

    reader = KafkaBroker(bootstrap)
    try:
        async with reader.consumer(new_group(), topics=[topic]) as consumer:
            got = await drain(consumer, 15)
    finally:
        await reader.aclose()
    # At least once: everything acknowledged is there; what the failed publish sent may be there too.
    assert {position(r) for r in before + after} <= {position(r) for r in got}
    assert {f"k{i}".encode() for i in [*range(5), *range(10, 15)]} <= {r.key for r in got}


def test_the_public_surface_is_what_it_says() -> None:
    assert sorted(docbus.broker.__all__) == [
        "Broker",
        "BrokerConsumer",
        "BrokerError",
        "BrokerUnavailable",
        "ConsumedRecord",
        "ConsumerFenced",
        "EmbeddedBroker",
        "KafkaBroker",
        "OutgoingRecord",
        "PublishedRecord",
        "RecordRejected",
        "broker_from_settings",
        "kafka_from_settings",
    ]
    assert BrokerUnavailable.retriable
    assert not RecordRejected.retriable
