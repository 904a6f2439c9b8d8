"""Forwarding survives its own parts failing: a consumer that fails at start-up is started again, and delivery
events the database refused are recorded when the records are processed again — on the embedded default (real
SQLite and PostgreSQL), with the file adapter writing real files."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Sequence
from pathlib import Path

import pytest
from sqlalchemy import select

from docbus.broker.base import BrokerUnavailable
from docbus.delivery import node as node_module
from docbus.delivery import recorder as recorder_module
from docbus.delivery.node import DeliveryNode
from docbus.delivery.recorder import EventRecorder, EventsNotStored
from docbus.runtime import BusRuntime
from docbus.settings import Settings
from docbus.store.database import Database
from docbus.store.messages import MessageStore, NewEvent
from docbus.store.migrate import upgrade_async
from docbus.store.tables import events

from .test_forwarding import document

ROUTES = """
[[destination]]
name = "archive"
adapter = "file"

[[rule]]
level1 = ["H41"]
destination = "archive"
"""


@pytest.fixture
async def runtime(tmp_path: Path, database_url: str) -> AsyncIterator[BusRuntime]:
    routes = tmp_path / "routes.toml"
    routes.write_text(ROUTES)
    (tmp_path / "archive").mkdir()
    settings = Settings(
        data_dir=tmp_path / "data",
        database_url=database_url,
        routes_file=routes,
        adapters={"archive": {"directory": str(tmp_path / "archive")}},
    )
    settings.data_dir.mkdir(parents=True)
    await upgrade_async(database_url)
    bus = BusRuntime.build(settings)
    await bus.start()
    try:
        yield bus
    finally:
        await bus.aclose()


async def _types(runtime: BusRuntime, message_id: str) -> list[str]:
    async with runtime.db.reader.connect() as conn:
        rows = await conn.execute(select(events.c.type).where(events.c.message_id == message_id).order_by(events.c.seq))
        return [r.type for r in rows]


async def _wait_for(runtime: BusRuntime, message_id: str, type_: str, seconds: float = 30) -> list[str]:
    deadline = asyncio.get_running_loop().time() + seconds
    while True:
        found = await _types(runtime, message_id)
        if type_ in found:
            return found
        assert asyncio.get_running_loop().time() < deadline, f"no {type_} on {message_id}: {found}"
        await asyncio.sleep(0.05)


async def test_a_consumer_that_fails_at_start_up_is_started_again(
    runtime: BusRuntime, sample_bytes: dict[str, bytes], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(node_module, "RESTART_PAUSES", (0.05, 0.2))
    real_ensure_topics = runtime.broker.ensure_topics
    refused: list[Sequence[str]] = []

    async def slow_broker_at_first(topics: Sequence[str]) -> None:
        # What a loaded Kafka does to a consumer starting up: the admin call times out.
        if any(t.startswith(runtime.topics.resend("archive")) for t in topics) and len(refused) < 2:
            refused.append(topics)
            raise BrokerUnavailable("ensure_topics: Kafka did not answer within 2 s")
        await real_ensure_topics(topics)

    monkeypatch.setattr(runtime.broker, "ensure_topics", slow_broker_at_first)
    node = DeliveryNode(runtime)
    await node.start()
    try:
        packet = document(sample_bytes["edoc_with_attachment_dc0bdef0.edxml"], ("000.00.01.H41",))
        outcome = await runtime.intake.accept(None, packet, "application/xml")
        message_id = outcome.message_id
        await _wait_for(runtime, message_id, "DELIVERED")
    finally:
        await node.aclose()
    assert len(refused) == 2
    assert node.restarts == {"docbus-deliver-archive": 2}
    assert (tmp_path / "archive" / "000.00.00.G22" / f"{message_id}.edxml").read_bytes() == packet


async def test_delivery_events_the_database_refused_are_recorded_on_the_second_pass(
    runtime: BusRuntime, sample_bytes: dict[str, bytes], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(recorder_module, "STORE_ATTEMPTS", 2)
    real_append = runtime.messages.append_events
    refused: list[list[str]] = []

    async def database_away_for_the_first_delivery(items: Sequence[NewEvent]) -> None:
        if any(i.type == "DELIVERED" for i in items) and len(refused) < 2:
            refused.append([i.type for i in items])
            raise ConnectionError("database went away")
        await real_append(items)

    monkeypatch.setattr(runtime.messages, "append_events", database_away_for_the_first_delivery)
    node = DeliveryNode(runtime)
    await node.start()
    try:
        packet = document(sample_bytes["edoc_with_attachment_dc0bdef0.edxml"], ("000.00.01.H41",))
        outcome = await runtime.intake.accept(None, packet, "application/xml")
        message_id = outcome.message_id
        types = await _wait_for(runtime, message_id, "DELIVERED")
        worker = node.workers["archive"]
    finally:
        await node.aclose()
    assert len(refused) == 2  # both attempts of the one batch holding the first DELIVERED
    assert types.count("DELIVERED") == 1
    # The first pass's FORWARDING went down with its DELIVERED; the second pass delivered again.
    assert worker.delivered == 2


async def test_flush_since_a_mark_reports_only_later_failures(db: Database, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(recorder_module, "STORE_ATTEMPTS", 1)
    store = MessageStore(db)
    fail = True

    async def append(items: Sequence[NewEvent]) -> None:
        if fail:
            raise ConnectionError("database went away")

    monkeypatch.setattr(store, "append_events", append)
    recorder = EventRecorder(store)
    await recorder.start()
    try:
        before = recorder.mark()
        recorder.record(NewEvent("01J0000000000000000000000A", "DELIVERED", actor="test"))
        with pytest.raises(EventsNotStored):
            await recorder.flush(since=before)
        after = recorder.mark()
        fail = False
        recorder.record(NewEvent("01J0000000000000000000000A", "DELIVERED", actor="test"))
        await recorder.flush(since=after)  # the earlier failure is not this caller's news any more
        with pytest.raises(EventsNotStored):
            await recorder.flush(since=before)  # but still is for one that marked before it
    finally:
        await recorder.aclose()
