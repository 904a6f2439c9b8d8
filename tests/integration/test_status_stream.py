"""The lifecycle stream publishes every event once, in id order, and never skips one that settles late; one
process at a time holds it, renewing its lease as it moves the cursor, and the next holder starts where it stopped."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime, timedelta

import orjson
import pytest
from sqlalchemy import update

from docbus.broker import EmbeddedBroker
from docbus.status_stream import StatusStream
from docbus.store.database import Database
from docbus.store.intake_writer import IntakeWriter
from docbus.store.messages import MessageStore, NewEvent, streamed_events_after
from docbus.store.tables import events
from docbus.topics import Topics

from .test_store_contract import submission


async def _published_types(broker: EmbeddedBroker, topic: str) -> list[str]:
    consumer = broker.consumer("reader", topics=[topic])
    async with consumer:
        records = await consumer.poll(timeout=1.0)
    return [orjson.loads(r.value)["type"] for r in records]


async def _written_at(db: Database, message_id: str, type_: str, when: datetime) -> None:
    """Pretend an event's row was written at ``when`` (a transaction that is still open writes later)."""
    async with db.transaction() as conn:
        await conn.execute(
            update(events).where(events.c.message_id == message_id, events.c.type == type_).values(recorded_at=when)
        )


async def test_a_late_settling_event_holds_the_cursor_back(db: Database) -> None:
    writer = IntakeWriter(db)
    await writer.start()
    outcome = await writer.submit(submission(b"<doc/>", dedup="status-stream"))
    await writer.aclose()
    now = datetime.now(UTC)
    store = MessageStore(db)
    # Appended in this order (ids ascending), but the first is written later than the second.
    await store.append_events([NewEvent(outcome.message_id, "LATE", actor="t")])
    await store.append_events([NewEvent(outcome.message_id, "EARLY", actor="t")])
    await _written_at(db, outcome.message_id, "LATE", now + timedelta(seconds=30))
    await _written_at(db, outcome.message_id, "EARLY", now - timedelta(seconds=30))
    broker = EmbeddedBroker(db)
    topics = Topics("stream-test")
    stream = StatusStream(db, broker, topics, owner="test", settle_seconds=0)

    assert await stream.step() == 1  # ACCEPTED only: LATE has not settled, so EARLY must wait behind it
    assert await stream.step() == 0
    assert await _published_types(broker, topics.status) == ["ACCEPTED"]

    later = StatusStream(db, broker, topics, owner="test", settle_seconds=-60)  # as if a minute had passed
    assert await later.step() == 2
    assert await _published_types(broker, topics.status) == ["ACCEPTED", "LATE", "EARLY"]


async def test_an_event_settles_on_when_it_was_written_not_when_it_happened(db: Database) -> None:
    """A delivery is stamped when the axis acknowledged it; a worker writes it later. What it claims to be is
    no evidence that the ids before it have committed: the stream waits on the row's write time."""
    writer = IntakeWriter(db)
    await writer.start()
    outcome = await writer.submit(submission(b"<doc/>", dedup="settle-on-write"))
    await writer.aclose()
    await _written_at(db, outcome.message_id, "ACCEPTED", datetime.now(UTC) - timedelta(minutes=5))
    long_ago = datetime.now(UTC) - timedelta(minutes=2)
    await MessageStore(db).append_events([NewEvent(outcome.message_id, "DELIVERED", actor="axis", at=long_ago)])
    broker = EmbeddedBroker(db)
    topics = Topics("settle-on-write")

    waiting = StatusStream(db, broker, topics, owner="test", settle_seconds=60)
    assert await waiting.step() == 1  # ACCEPTED, written five minutes ago; DELIVERED was written just now
    assert await _published_types(broker, topics.status) == ["ACCEPTED"]

    later = StatusStream(db, broker, topics, owner="test", settle_seconds=-60)
    assert await later.step() == 1
    consumer = broker.consumer("reader", topics=[topics.status])
    async with consumer:
        published = [orjson.loads(r.value) for r in await consumer.poll(timeout=1.0)]
    delivered = published[-1]
    assert delivered["type"] == "DELIVERED"
    assert datetime.fromisoformat(delivered["at"]) == long_ago
    assert datetime.fromisoformat(delivered["recorded_at"]) > long_ago + timedelta(minutes=1)


async def test_one_process_at_a_time_publishes_the_stream(db: Database) -> None:
    broker = EmbeddedBroker(db)
    first = StatusStream(db, broker, Topics("lease-test"), owner="first")
    second = StatusStream(db, broker, Topics("lease-test"), owner="second")
    assert await first._claim() == 0
    assert await second._claim() is None


async def test_the_holder_renews_its_lease_with_each_cursor_move_and_hands_over_where_it_stopped(
    db: Database, monkeypatch: pytest.MonkeyPatch
) -> None:
    broker = EmbeddedBroker(db)
    topics = Topics("handover-test")
    first = StatusStream(db, broker, topics, owner="first", settle_seconds=0, lease_seconds=1.0)
    second = StatusStream(db, broker, topics, owner="second", settle_seconds=0, lease_seconds=1.0)
    claims = 0
    claim = first._claim

    async def counted() -> int | None:
        nonlocal claims
        claims += 1
        return await claim()

    monkeypatch.setattr(first, "_claim", counted)
    writer = IntakeWriter(db)
    await writer.start()
    try:
        await writer.submit(submission(b"<one/>", dedup="handover-1"))
        assert await first.step() == 1
        await writer.submit(submission(b"<two/>", dedup="handover-2"))
        assert await first.step() == 1
        assert claims == 1  # the second step ran on the lease the first cursor move renewed: no claim transaction
        assert await second.step() == 0  # the stream is held
        await asyncio.sleep(1.2)  # the holder stops moving the cursor: its lease runs out
        await writer.submit(submission(b"<three/>", dedup="handover-3"))
        assert await second.step() == 1  # only the event the first holder had not published
        assert await first.step() == 0  # and the first holder has lost the stream
        assert claims == 2
    finally:
        await writer.aclose()
    assert await _published_types(broker, topics.status) == ["ACCEPTED", "ACCEPTED", "ACCEPTED"]


@pytest.mark.parametrize("database_url", ["sqlite"], indirect=True)
async def test_the_fast_read_of_a_sqlite_file_streams_the_same_bytes(db: Database) -> None:
    writer = IntakeWriter(db)
    await writer.start()
    outcome = await writer.submit(submission(b"<doc/>", dedup="same-bytes"))
    await writer.aclose()
    whole_second = datetime(2026, 11, 27, 7, 0, 0, tzinfo=UTC)  # no microseconds: isoformat leaves them out
    await MessageStore(db).append_events(
        [
            NewEvent(outcome.message_id, "RECEIPT", actor="000.00.00.H41", detail={"code": "03", "text": "Đã nhận"}),
            NewEvent(outcome.message_id, "DELIVERED", actor="national_axis", destination="axis", at=whole_second),
            NewEvent(outcome.message_id, "NOTE", actor="t", detail={"nested": {"list": [1, 2.5, None, True]}}),
        ]
    )
    async with db.reading() as inline:
        fast = await streamed_events_after(inline, 0, 100)
    async with db.reader.connect() as conn:
        general = await streamed_events_after(conn, 0, 100)
    assert [e.type for e in fast] == ["ACCEPTED", "RECEIPT", "DELIVERED", "NOTE"]
    assert fast == general
    delivered = orjson.loads(fast[2].value)
    assert datetime.fromisoformat(delivered["at"]) == whole_second
    assert fast[2].recorded_at == datetime.fromisoformat(delivered["recorded_at"]) > whole_second
    assert orjson.loads(fast[1].value)["detail"] == {"code": "03", "text": "Đã nhận"}
