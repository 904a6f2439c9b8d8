"""Forwarding survives its own parts failing and one document failing: a consumer that fails at start-up is
started again, delivery events the database refused are recorded when the records are processed again, and a
document whose delivery is being retried holds back neither the other documents nor the group's progress past
what is done — on the embedded default (real SQLite and PostgreSQL), with the file adapter writing real files."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Sequence
from pathlib import Path

import pytest
from lxml import etree
from sqlalchemy import func, select

from docbus.adapters.base import DeliveryResult, Outbound, RetriableDeliveryError
from docbus.broker.base import BrokerUnavailable, ConsumedRecord
from docbus.broker.embedded_consumer import EmbeddedConsumer
from docbus.delivery import node as node_module
from docbus.delivery import recorder as recorder_module
from docbus.delivery.node import DeliveryNode
from docbus.delivery.recorder import EventRecorder, EventsNotStored
from docbus.runtime import BusRuntime
from docbus.settings import Settings
from docbus.store.database import Database
from docbus.store.messages import MessageStore, NewEvent
from docbus.store.migrate import upgrade_async
from docbus.store.tables import broker_offsets, events

from .test_forwarding import document
from .test_routes_and_events import ROUTES


@pytest.fixture
async def runtime(tmp_path: Path, database_url: str) -> AsyncIterator[BusRuntime]:
    routes = tmp_path / "routes.toml"
    routes.write_text(ROUTES)
    (tmp_path / "archive").mkdir()
    settings = Settings(
        data_dir=tmp_path / "data",
        database_url=database_url,
        routes_file=routes,
        adapters={
            "archive": {
                "directory": str(tmp_path / "archive"),
                "retry": {"base_delay_seconds": 0.05, "max_delay_seconds": 0.2, "max_attempts": 10_000},
                "breaker": {"failure_threshold": 10_000},
            }
        },
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


async def _deliver_one(
    runtime: BusRuntime, sample_bytes: dict[str, bytes]
) -> tuple[DeliveryNode, bytes, str, list[str]]:
    """Start forwarding, accept one document for the archive, wait until it is DELIVERED, stop forwarding."""
    node = DeliveryNode(runtime)
    await node.start()
    try:
        packet = document(sample_bytes["edoc_with_attachment_dc0bdef0.edxml"], ("000.00.01.H41",))
        message_id = (await runtime.intake.accept(None, packet, "application/xml")).message_id
        types = await _wait_for(runtime, message_id, "DELIVERED")
    finally:
        await node.aclose()
    return node, packet, message_id, types


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
    node, packet, message_id, _ = await _deliver_one(runtime, sample_bytes)
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
    node, _, _, types = await _deliver_one(runtime, sample_bytes)
    worker = node.workers["archive"]
    assert len(refused) == 2  # both attempts of the one batch holding the first DELIVERED
    assert types.count("DELIVERED") == 1
    # The first pass's FORWARDING went down with its DELIVERED; the second pass delivered again.
    assert worker.delivered == 2


async def test_a_worker_tells_delivered_known_and_foreign_records_apart(
    runtime: BusRuntime, sample_bytes: dict[str, bytes]
) -> None:
    """What a worker looks up before delivering a batch: which of its messages this destination has delivered
    already (re-read after a crash, or published twice), and which this bus knows at all (a topic shared with
    another bus)."""
    node, _, delivered_id, _ = await _deliver_one(runtime, sample_bytes)
    waiting = document(sample_bytes["edoc_with_attachment_dc0bdef0.edxml"], ("000.00.01.H41",))
    waiting_id = (await runtime.intake.accept(None, waiting, "application/xml")).message_id  # forwarding is off
    foreign_id = "01J0000000000000000000FRGN"
    # Started here and delivered elsewhere: neither makes it delivered by this destination.
    await runtime.messages.append_events(
        [
            NewEvent(waiting_id, "FORWARDING", "worker", destination="archive"),
            NewEvent(waiting_id, "DELIVERED", "worker", destination="elsewhere"),
        ]
    )

    def record(offset: int, message_id: str) -> ConsumedRecord:
        return ConsumedRecord("t", 0, offset, b"k", b"", [("message-id", message_id.encode())], 0)

    worker = node.workers["archive"]
    batch = [record(i, m) for i, m in enumerate((delivered_id, waiting_id, foreign_id, delivered_id))]
    delivered, known = await worker._lookup(batch)
    assert delivered == {delivered_id}
    assert known == {delivered_id, waiting_id}
    assert await worker._lookup([]) == (set(), set())


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


async def _delivered_in_order(runtime: BusRuntime) -> list[str]:
    async with runtime.db.reader.connect() as conn:
        rows = await conn.execute(select(events.c.message_id).where(events.c.type == "DELIVERED").order_by(events.c.id))
        return [r.message_id for r in rows]


async def test_a_document_being_retried_holds_back_only_its_own_later_messages(
    runtime: BusRuntime, sample_bytes: dict[str, bytes], tmp_path: Path
) -> None:
    template = sample_bytes["edoc_with_attachment_dc0bdef0.edxml"]
    first = document(template, ("000.00.01.H41",))
    root = etree.fromstring(first)
    root.append(etree.Comment("the second version of the same document"))
    second = bytes(etree.tostring(root, xml_declaration=True, encoding="UTF-8"))  # same DocumentId: same key
    stuck = {first}

    node = DeliveryNode(runtime)
    await node.start()
    adapter = node.workers["archive"].adapter
    real_deliver = adapter.deliver

    async def axis_refuses_one_document(outbound: Outbound) -> DeliveryResult:
        if outbound.payload in stuck:
            raise RetriableDeliveryError("503 from the destination for this document")
        return await real_deliver(outbound)

    adapter.deliver = axis_refuses_one_document  # type: ignore[method-assign]
    try:
        a = (await runtime.intake.accept(None, first, "application/xml")).message_id
        await _wait_for(runtime, a, "RETRYING")  # what comes next arrives while it is being retried
        a2 = (await runtime.intake.accept(None, second, "application/xml")).message_id
        others = [
            (await runtime.intake.accept(None, document(template, ("000.00.01.H41",)), "application/xml")).message_id
            for _ in range(5)
        ]
        for other in others:
            await _wait_for(runtime, other, "DELIVERED")
        assert "RETRYING" in await _types(runtime, a)
        assert "DELIVERED" not in await _types(runtime, a)
        assert "FORWARDING" not in await _types(runtime, a2)  # waits behind the first version
    finally:
        await node.aclose()

    # A new worker (a restart) re-reads from the group's offset: the stuck document and what came after it in
    # its partition, but it delivers only what was not delivered.
    stuck.clear()
    node = DeliveryNode(runtime)
    await node.start()
    try:
        await _wait_for(runtime, a2, "DELIVERED")
        worker = node.workers["archive"]
    finally:
        await node.aclose()
    order = await _delivered_in_order(runtime)
    assert sorted(order) == sorted([a, a2, *others])  # each once
    assert order.index(a) < order.index(a2)
    assert worker.delivered == 2
    written = tmp_path / "archive" / "000.00.00.G22"
    assert (written / f"{a2}.edxml").read_bytes() == second


async def test_records_that_arrive_while_a_commit_waits_are_delivered_meanwhile(
    runtime: BusRuntime, sample_bytes: dict[str, bytes], monkeypatch: pytest.MonkeyPatch
) -> None:
    """A commit waits for the events to be written (behind every other writer) and for the broker; the worker
    keeps reading and delivering meanwhile, and the held-up commit still moves the group's offset."""
    group = runtime.topics.deliver_group("archive")
    held, release = asyncio.Event(), asyncio.Event()
    real_commit = EmbeddedConsumer.commit

    async def slow_commit(self: EmbeddedConsumer, records: Sequence[ConsumedRecord]) -> None:
        if self._group == group:
            held.set()
            await release.wait()
        await real_commit(self, records)

    monkeypatch.setattr(EmbeddedConsumer, "commit", slow_commit)
    template = sample_bytes["edoc_with_attachment_dc0bdef0.edxml"]

    async def accept() -> str:
        packet = document(template, ("000.00.01.H41",))
        return (await runtime.intake.accept(None, packet, "application/xml")).message_id

    node = DeliveryNode(runtime)
    await node.start()
    try:
        first = await accept()
        await _wait_for(runtime, first, "DELIVERED")
        await asyncio.wait_for(held.wait(), timeout=30)
        later = [await accept() for _ in range(3)]
        for message_id in later:
            await _wait_for(runtime, message_id, "DELIVERED")
        assert await _committed(runtime, group) == 0  # all four delivered while the first commit still waits
        release.set()
        deadline = asyncio.get_running_loop().time() + 30
        while await _committed(runtime, group) < 4:
            assert asyncio.get_running_loop().time() < deadline, await _committed(runtime, group)
            await asyncio.sleep(0.05)
    finally:
        release.set()
        await node.aclose()
    assert await _committed(runtime, group) == 4


async def _committed(runtime: BusRuntime, group: str) -> int:
    """How many records of the group's topics its committed offsets are past (every partition together)."""
    async with runtime.db.reader.connect() as conn:
        total = await conn.scalar(
            select(func.coalesce(func.sum(broker_offsets.c.committed_offset), 0)).where(
                broker_offsets.c.group_id == group
            )
        )
    return int(total or 0)
