"""The lifecycle stream publishes every event once, in id order, and never skips one that settles late."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import orjson

from docbus.broker import EmbeddedBroker
from docbus.status_stream import StatusStream
from docbus.store.database import Database
from docbus.store.intake_writer import IntakeWriter
from docbus.store.messages import MessageStore, NewEvent
from docbus.topics import Topics

from .test_store_contract import submission


async def _published_types(broker: EmbeddedBroker, topic: str) -> list[str]:
    consumer = broker.consumer("reader", topics=[topic])
    async with consumer:
        records = await consumer.poll(timeout=1.0)
    return [orjson.loads(r.value)["type"] for r in records]


async def test_a_late_settling_event_holds_the_cursor_back(db: Database) -> None:
    writer = IntakeWriter(db)
    await writer.start()
    outcome = await writer.submit(submission(b"<doc/>", dedup="status-stream"))
    await writer.aclose()
    now = datetime.now(UTC)
    store = MessageStore(db)
    # Appended in this order (ids ascending), but the second carries an older time than the first.
    await store.append_events([NewEvent(outcome.message_id, "FRESH", actor="t", at=now + timedelta(seconds=30))])
    await store.append_events([NewEvent(outcome.message_id, "OLD", actor="t", at=now - timedelta(seconds=30))])
    broker = EmbeddedBroker(db)
    topics = Topics("stream-test")
    stream = StatusStream(db, broker, topics, owner="test", settle_seconds=0)

    assert await stream.step() == 1  # ACCEPTED only: FRESH has not settled, so OLD must wait behind it
    assert await stream.step() == 0
    assert await _published_types(broker, topics.status) == ["ACCEPTED"]

    later = StatusStream(db, broker, topics, owner="test", settle_seconds=-60)  # as if a minute had passed
    assert await later.step() == 2
    assert await _published_types(broker, topics.status) == ["ACCEPTED", "FRESH", "OLD"]


async def test_one_process_at_a_time_publishes_the_stream(db: Database) -> None:
    broker = EmbeddedBroker(db)
    first = StatusStream(db, broker, Topics("lease-test"), owner="first")
    second = StatusStream(db, broker, Topics("lease-test"), owner="second")
    assert await first._claim() == 0
    assert await second._claim() is None
