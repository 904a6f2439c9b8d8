"""On a SQLite file with Kafka one relay at a time sweeps the outbox (a lease) and reads what to publish without
claiming it: two relays publish every message once between them, all by one of them; rows an eager relay holds
wait for its lease to run out; a stopped sweeper marks what it published and hands the lease to the next."""

from __future__ import annotations

import asyncio
import dataclasses
import time
import uuid
from collections import Counter
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest

from docbus.broker import KafkaBroker
from docbus.relay import OutboxRelay
from docbus.store.database import Database
from docbus.store.intake_writer import IntakeWriter, Submission
from docbus.store.messages import MessageStore
from docbus.store.migrate import upgrade_async

from ..conftest import require_service
from .kafka_support import read_topic
from .test_store_contract import submission


@pytest.fixture
def kafka_bootstrap() -> str:
    return require_service("DOCBUS_TEST_KAFKA_BOOTSTRAP", "Apache Kafka")


@pytest.fixture
async def db(tmp_path: Path) -> AsyncIterator[Database]:
    url = f"sqlite+aiosqlite:///{tmp_path / 'docbus.sqlite3'}"
    await upgrade_async(url)
    database = Database(url)
    yield database
    await database.dispose()


@pytest.fixture
async def broker(kafka_bootstrap: str) -> AsyncIterator[KafkaBroker]:
    kafka = KafkaBroker(kafka_bootstrap, partitions=3)
    await kafka.start()
    yield kafka
    await kafka.aclose()


def to_topic(sub: Submission, topic: str) -> Submission:
    return dataclasses.replace(sub, topic=topic)


async def drained(relay: OutboxRelay, seconds: float = 60) -> None:
    deadline = time.monotonic() + seconds
    while await relay.backlog() > 0:
        assert time.monotonic() < deadline, f"{await relay.backlog()} rows still unpublished"
        await asyncio.sleep(0.05)


async def test_two_sweepers_publish_every_message_once_and_one_of_them_all(
    db: Database, broker: KafkaBroker, kafka_bootstrap: str
) -> None:
    topic = f"solo-{uuid.uuid4().hex[:8]}"
    writer = IntakeWriter(db, lease_owner=None)  # gateways that leave publishing to workers
    first = OutboxRelay(db, broker, owner="worker:a", sweep_interval=0.02)
    second = OutboxRelay(db, broker, owner="worker:b", sweep_interval=0.02)
    await writer.start()
    await first.start()
    await second.start()
    try:
        outcomes = []
        for wave in range(4):  # arriving while both sweep, not as one backlog
            outcomes += await asyncio.gather(
                *(
                    writer.submit(to_topic(submission(f"<m{wave}-{i}/>".encode(), dedup=f"s{wave}-{i}"), topic))
                    for i in range(50)
                )
            )
            await asyncio.sleep(0.1)
        await drained(first)
    finally:
        await first.aclose()
        await second.aclose()
        await writer.aclose()
    records = await read_topic(kafka_bootstrap, topic, expect=200)
    published = Counter(r["headers"]["message-id"] for r in records)
    assert set(published) == {o.message_id for o in outcomes}
    assert set(published.values()) == {1}
    assert sorted([first.published, second.published]) == [0, 200]
    store = MessageStore(db)
    for outcome in outcomes[::20]:
        types = [e.type for e in await store.timeline(outcome.message_id)]
        assert types == ["ACCEPTED", "PUBLISHED"]


async def test_rows_an_eager_relay_holds_wait_for_its_lease(
    db: Database, broker: KafkaBroker, kafka_bootstrap: str
) -> None:
    topic = f"solo-{uuid.uuid4().hex[:8]}"
    # A gateway that leased its rows for its own eager publishing, and then died before publishing them.
    writer = IntakeWriter(db, lease_owner="gateway:gone", lease_seconds=2.0)
    await writer.start()
    held = await writer.submit(to_topic(submission(b"<held/>", dedup="held"), topic))
    await writer.aclose()
    leased_at = time.monotonic()
    sweeper = OutboxRelay(db, broker, owner="worker:a", sweep_interval=0.02)
    await sweeper.start()
    try:
        await asyncio.sleep(1.0)
        assert await sweeper.backlog() == 1  # still the gateway's
        await drained(sweeper)
        assert time.monotonic() - leased_at >= 2.0
    finally:
        await sweeper.aclose()
    records = await read_topic(kafka_bootstrap, topic, expect=1)
    assert [r["headers"]["message-id"] for r in records] == [held.message_id]


async def test_a_stopped_sweeper_marks_what_it_published_and_the_next_takes_over_at_once(
    db: Database, broker: KafkaBroker, kafka_bootstrap: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    topic = f"solo-{uuid.uuid4().hex[:8]}"
    writer = IntakeWriter(db, lease_owner=None)
    first = OutboxRelay(db, broker, owner="worker:a", sweep_interval=0.02, lease_seconds=600)
    mark = first._mark_and_claim
    marking, release = asyncio.Event(), asyncio.Event()

    async def slow_mark(unmarked: Any, *, claim: bool = True) -> Any:  # the marker waiting for the write lock
        marking.set()
        await release.wait()
        return await mark(unmarked, claim=claim)

    monkeypatch.setattr(first, "_mark_and_claim", slow_mark)
    await writer.start()
    await first.start()
    try:
        outcome = await writer.submit(to_topic(submission(b"<one/>", dedup="one"), topic))
        await asyncio.wait_for(marking.wait(), 30)
        assert len(await read_topic(kafka_bootstrap, topic, expect=1)) == 1
        assert await first.backlog() == 1  # published, not marked yet
        stopping = asyncio.create_task(first.aclose())
        await asyncio.sleep(0.2)
        assert not stopping.done()  # a stopping sweeper waits for its marks instead of dropping them
        release.set()
        await stopping
        assert await first.backlog() == 0
        found = await MessageStore(db).with_timeline(outcome.message_id)
        assert found is not None
        assert [e.type for e in found[1]] == ["ACCEPTED", "PUBLISHED"]
        # The lease (ten minutes) was handed over, not left to run out.
        second = OutboxRelay(db, broker, owner="worker:b", sweep_interval=0.02, lease_seconds=600)
        await second.start()
        try:
            later = await writer.submit(to_topic(submission(b"<two/>", dedup="two"), topic))
            await drained(second, seconds=30)
        finally:
            await second.aclose()
    finally:
        await first.aclose()
        await writer.aclose()
    records = await read_topic(kafka_bootstrap, topic, expect=2)
    assert sorted(r["headers"]["message-id"] for r in records) == sorted([outcome.message_id, later.message_id])
    assert second.published == 1
