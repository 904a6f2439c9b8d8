"""Payload retention on SQLite and on a real PostgreSQL: a settled message older than the retention loses its
payload and keeps its record, receipt and timeline; a message that is not settled keeps everything."""

from __future__ import annotations

import asyncio
import hashlib
import os
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from sqlalchemy import func, select, update

from docbus.adapters.file import FileAdapter, FileSettings
from docbus.audit_verify import verify_all
from docbus.broker.base import ConsumedRecord
from docbus.broker.embedded import EmbeddedBroker
from docbus.delivery.dead_letters import DeadLetterStore
from docbus.delivery.destination_worker import DestinationWorker
from docbus.delivery.node import DeliveryNode
from docbus.delivery.recorder import EventRecorder
from docbus.envelope import Envelope, MessageKind, SchemaRef
from docbus.ids import new_message_id, new_trace_id
from docbus.payload_retention import PAYLOAD_PURGED, PayloadRetention
from docbus.payload_store import DirectoryPayloadStore
from docbus.relay import publication_for
from docbus.routing import RouteTable
from docbus.runtime import BusRuntime
from docbus.settings import Settings
from docbus.store.database import Database
from docbus.store.intake_writer import IntakeWriter, Submission
from docbus.store.messages import MessageStore, NewEvent
from docbus.store.migrate import upgrade_async
from docbus.store.tables import dead_letters, messages, outbox, payloads
from docbus.topics import Topics

from ..conftest import RunningGateway
from .helpers import sender_of
from .test_cli import docbus

NATIONAL = "000.00.00.H41"  # routed to the national axis
PROVINCIAL = "000.01.32.H57"  # routed to the provincial axis (level-1 code 01)
LOCAL_AGENCY = "000.01.32.H99"  # registered here: delivered locally, no destination
ROUTES = RouteTable.from_dict(
    {
        "destination": [{"name": "national", "adapter": "national_axis"}, {"name": "provincial"}],
        "rule": [{"destination": "provincial", "prefixes": ["000.01."]}, {"destination": "national", "any": True}],
    }
)
DAY = timedelta(days=1)


def submission(receivers: tuple[str, ...], *, payload_ref: str | None = None) -> Submission:
    body = f"<doc id='{new_message_id()}'/>".encode()
    env = Envelope(
        message_id=new_message_id(),
        kind=MessageKind.EDOC,
        schema=SchemaRef("qcvn102.edoc", "2016.1"),
        sender="000.00.00.G22",
        receivers=receivers,
        business_id=f"doc-{new_trace_id()[:8]}",
        sha256=hashlib.sha256(body).hexdigest(),
        size=len(body),
        received_at=datetime.now(UTC),
        content_type="application/xml",
        idempotency_key=None,
        trace_id=new_trace_id(),
    )
    return Submission(env, body, env.sha256, receipt=b"{}", topic="t", payload_ref=payload_ref)


async def accept(db: Database, subs: list[Submission]) -> list[str]:
    writer = IntakeWriter(db)
    await writer.start()
    try:
        outcomes = await asyncio.gather(*(writer.submit(s) for s in subs))
    finally:
        await writer.aclose()
    return [o.message_id for o in outcomes]


async def publish(db: Database, ids: list[str]) -> None:
    async with db.transaction() as conn:
        await conn.execute(update(outbox).where(outbox.c.message_id.in_(ids)).values(published_at=datetime.now(UTC)))


async def states(store: MessageStore, message_id: str, *steps: tuple[str, str]) -> None:
    """Append destination events: (destination, state) in order."""
    await store.append_events(
        [NewEvent(message_id, state, actor="test", destination=destination) for destination, state in steps]
    )


def retention(db: Database, payload_dir: Path, *, batch: int = 200) -> PayloadRetention:
    return PayloadRetention(
        db,
        DirectoryPayloadStore(payload_dir),
        ROUTES,
        lambda: frozenset({LOCAL_AGENCY}),
        retention_seconds=30 * 86400,
        batch=batch,
        pause_seconds=0,
    )


async def payload_ids(db: Database) -> set[str]:
    async with db.reader.connect() as conn:
        return {str(r[0]) for r in await conn.execute(select(payloads.c.message_id))}


async def test_only_settled_messages_older_than_the_retention_lose_their_payload(db: Database, tmp_path: Path) -> None:
    store = MessageStore(db)
    ids = await accept(
        db,
        [
            submission((NATIONAL,)),  # 0 delivered
            submission((NATIONAL, PROVINCIAL)),  # 1 delivered to one destination, still retrying at the other
            submission((NATIONAL, PROVINCIAL)),  # 2 delivered to one, refused for good (FAILED) by the other
            submission((NATIONAL,)),  # 3 dead, its dead letter waits
            submission((NATIONAL,)),  # 4 dead, resent, delivered
            submission((NATIONAL,)),  # 5 not published yet
            submission((LOCAL_AGENCY,)),  # 6 for a local agency only: no destination
            submission((NATIONAL,)),  # 7 published, never consumed by its destination
            submission((PROVINCIAL,)),  # 8 forwarding
        ],
    )
    await publish(db, [i for n, i in enumerate(ids) if n != 5])
    await states(store, ids[0], ("national", "FORWARDING"), ("national", "DELIVERED"))
    await states(store, ids[1], ("national", "DELIVERED"), ("provincial", "RETRYING"))
    await states(store, ids[2], ("national", "DELIVERED"), ("provincial", "FAILED"))
    await states(store, ids[3], ("national", "RETRYING"), ("national", "DEAD"))
    await states(store, ids[4], ("national", "DEAD"), ("national", "RESENT"), ("national", "DELIVERED"))
    await states(store, ids[8], ("provincial", "FORWARDING"))
    async with db.transaction() as conn:
        for n, resent in ((3, None), (4, datetime.now(UTC))):
            await conn.execute(
                dead_letters.insert().values(
                    message_id=ids[n],
                    destination="national",
                    receivers="[]",
                    reason="refused",
                    attempts="[]",
                    created_at=datetime.now(UTC),
                    resent_at=resent,
                )
            )

    # Younger than the retention: nothing goes, settled or not.
    report = await retention(db, tmp_path).purge_once(now=datetime.now(UTC) + 29 * DAY)
    assert (report.purged, report.kept) == (0, 0)
    assert await payload_ids(db) == set(ids)

    report = await retention(db, tmp_path, batch=2).purge_once(now=datetime.now(UTC) + 31 * DAY)
    purged = {ids[n] for n in (0, 2, 4, 6)}
    assert (report.purged, report.kept) == (4, 5)
    assert await payload_ids(db) == set(ids) - purged
    for message_id in ids:
        found = await store.with_timeline(message_id)
        assert found is not None
        record, timeline = found
        assert (record.payload_purged_at is not None) == (message_id in purged)
        assert await store.receipt(message_id) == b"{}"  # the receipt stays
        gone = [e for e in timeline if e.type == PAYLOAD_PURGED]
        if message_id in purged:
            assert len(gone) == 1 and gone[0].actor == "retention"
            assert gone[0].detail["sha256"] == record.sha256 and gone[0].detail["size"] == record.size
        else:
            assert gone == []
    _messages, _events, broken = await verify_all(db)
    assert broken == []  # the hash chains still hold

    # A second pass (another worker, or the next interval) finds nothing more to do.
    again = await retention(db, tmp_path).purge_once(now=datetime.now(UTC) + 31 * DAY)
    assert (again.purged, again.kept) == (0, 5)


async def test_a_claim_checked_payload_file_goes_after_its_message_is_marked(db: Database, tmp_path: Path) -> None:
    payload_store = DirectoryPayloadStore(tmp_path / "payloads")
    pending = submission((NATIONAL,))
    ref = await payload_store.put(pending.envelope.message_id, b"x" * 1000)
    big = Submission(pending.envelope, b"", pending.dedup_key, pending.receipt, pending.topic, payload_ref=ref)
    kept = submission((NATIONAL,))
    kept_ref = await payload_store.put(kept.envelope.message_id, b"y" * 1000)
    kept = Submission(kept.envelope, b"", kept.dedup_key, kept.receipt, kept.topic, payload_ref=kept_ref)
    ids = await accept(db, [big, kept])
    await publish(db, ids)
    store = MessageStore(db)
    await states(store, ids[0], ("national", "DELIVERED"))
    await states(store, ids[1], ("national", "RETRYING"))

    report = await retention(db, tmp_path / "payloads").purge_once(now=datetime.now(UTC) + 31 * DAY)
    assert report.purged == 1
    assert not payload_store.path_of(ref).exists()
    assert payload_store.path_of(kept_ref).exists()
    record = await store.get(ids[0])
    assert record is not None and record.payload_ref is None and record.payload_purged_at is not None
    async with db.reader.connect() as conn:
        claim_checked = await conn.scalar(
            select(func.count()).select_from(messages).where(messages.c.payload_ref.is_not(None))
        )
    assert claim_checked == 1  # only the one still waiting for its destination


async def test_a_message_unsettled_while_the_pass_looked_keeps_its_payload(db: Database, tmp_path: Path) -> None:
    """Settledness is read again inside the purging transaction: a dead letter made between the pass's read
    and its write keeps the payload for the resend."""
    store = MessageStore(db)
    (message_id,) = await accept(db, [submission((NATIONAL,))])
    await publish(db, [message_id])
    await states(store, message_id, ("national", "DELIVERED"))
    job = retention(db, tmp_path)
    candidates = await job._inline_after("", "~")
    await states(store, message_id, ("national", "RESENT"))  # an operator resent it meanwhile
    assert await job._purge(candidates, datetime.now(UTC)) == 0
    assert await payload_ids(db) == {message_id}


def test_retention_must_be_positive(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="positive"):
        PayloadRetention(
            None,  # type: ignore[arg-type]
            DirectoryPayloadStore(tmp_path),
            ROUTES,
            frozenset,
            retention_seconds=0,
        )


async def test_the_api_answers_410_for_a_purged_payload_and_still_replays_the_receipt(
    gateway: RunningGateway, sample_bytes: dict[str, bytes]
) -> None:
    packet = sample_bytes["edoc_new.edxml"]
    sender = sender_of(packet)
    await gateway.register(sender)
    async with gateway.client(sender) as client:
        posted = await client.post("/v1/messages", content=packet, headers={"Content-Type": "application/xml"})
        assert posted.status_code == 202, posted.text
        location = posted.headers["location"]
        for _ in range(200):  # the gateway's relay publishes it to the embedded broker
            if (await client.get(location)).json()["status"] == "PUBLISHED":
                break
            await asyncio.sleep(0.05)
        job = PayloadRetention(
            gateway.db,
            DirectoryPayloadStore(gateway.settings.resolved_payload_dir()),
            RouteTable(),  # no routes: published is settled
            frozenset,
            retention_seconds=86400,
        )
        assert (await job.purge_once(now=datetime.now(UTC) + 2 * DAY)).purged == 1

        gone = await client.get(location + "/payload")
        assert gone.status_code == 410
        assert gone.headers["content-type"].startswith("application/problem+json")
        assert gone.json()["type"].endswith("/payload-purged")
        assert packet not in gone.content
        detail = (await client.get(location)).json()
        assert detail["payload_purged_at"] is not None
        assert detail["events"][-1]["type"] == PAYLOAD_PURGED
        assert detail["events"][-1]["detail"]["sha256"] == hashlib.sha256(packet).hexdigest()
        assert (await client.get(location + "/receipt")).content == posted.content
        replay = await client.post("/v1/messages", content=packet, headers={"Content-Type": "application/xml"})
        assert replay.content == posted.content  # the identity is the message row's: replays still answer
    async with gateway.db.reader.connect() as conn:
        assert await conn.scalar(select(func.count()).select_from(payloads)) == 0


async def test_a_worker_purges_by_itself_and_not_when_retention_is_off(
    tmp_path: Path, database_url: str, sample_bytes: dict[str, bytes]
) -> None:
    await upgrade_async(database_url)
    settings = Settings(
        data_dir=tmp_path / "data",
        database_url=database_url,
        payload_retention_days=1 / 86400,  # a second
        payload_retention_check_seconds=0.2,
    )
    settings.data_dir.mkdir(parents=True)
    idle = BusRuntime.build(settings.model_copy(update={"payload_retention_days": None}))
    try:
        assert DeliveryNode(idle)._payload_retention() is None
    finally:
        await idle.db.dispose()

    runtime = BusRuntime.build(settings)
    await runtime.start()
    node = DeliveryNode(runtime)
    await node.start()
    try:
        outcome = await runtime.intake.accept(None, sample_bytes["edoc_new.edxml"], "application/xml")
        deadline = asyncio.get_running_loop().time() + 15
        record = await runtime.messages.get(outcome.message_id)
        while record is not None and record.payload_purged_at is None:
            assert asyncio.get_running_loop().time() < deadline, "the worker did not purge the payload"
            await asyncio.sleep(0.1)
            record = await runtime.messages.get(outcome.message_id)
        assert await runtime.messages.payload(outcome.message_id) is None
    finally:
        await node.aclose()
        await runtime.aclose()


async def test_a_destination_reading_a_purged_record_again_skips_it(db: Database, tmp_path: Path) -> None:
    """A consumer group that lost its offsets reads old records again; one whose claim-checked payload retention
    deleted is skipped (it was settled), while a missing payload nobody purged is still an error."""
    payload_store = DirectoryPayloadStore(tmp_path / "payloads")
    subs = []
    for _ in range(2):
        sub = submission((NATIONAL,))
        ref = await payload_store.put(sub.envelope.message_id, b"z" * 2000)
        subs.append(Submission(sub.envelope, b"", sub.dedup_key, sub.receipt, sub.topic, payload_ref=ref))
    purged_id, lost_id = await accept(db, subs)
    await publish(db, [purged_id, lost_id])
    store = MessageStore(db)
    await states(store, purged_id, ("national", "FAILED"))  # refused for good: settled
    assert (await retention(db, tmp_path / "payloads").purge_once(now=datetime.now(UTC) + 31 * DAY)).purged == 1
    assert subs[1].payload_ref is not None
    payload_store.path_of(subs[1].payload_ref).unlink()  # lost, not purged

    broker = EmbeddedBroker(db)
    drop = tmp_path / "drop"
    drop.mkdir()
    worker = DestinationWorker(
        "national",
        FileAdapter(FileSettings(directory=drop)),
        broker=broker,
        db=db,
        routes=ROUTES,
        local_agencies=frozenset,
        recorder=EventRecorder(store),
        dead_letters=DeadLetterStore(db, broker, Topics()),
        payload_store=payload_store,
        topics=Topics(),
    )
    records = [
        ConsumedRecord(p.record.topic, 0, n, p.record.key, p.record.value, p.record.headers, 0)
        for n, p in enumerate(publication_for(s) for s in subs)
    ]
    await worker.handle(records[0], set(), {purged_id, lost_id})
    assert list(drop.iterdir()) == []
    assert [e.type for e in await store.timeline(purged_id)][-1] == PAYLOAD_PURGED  # no FORWARDING after it
    with pytest.raises(FileNotFoundError):
        await worker.handle(records[1], set(), {purged_id, lost_id})


async def test_the_purge_command_counts_on_a_dry_run_and_deletes_otherwise(tmp_path: Path) -> None:
    env = {**os.environ, "DOCBUS_DATA_DIR": str(tmp_path / "data")}
    for name in (
        "DOCBUS_DATABASE_URL",
        "DOCBUS_KAFKA_BOOTSTRAP",
        "DOCBUS_ROUTES_FILE",
        "DOCBUS_PAYLOAD_RETENTION_DAYS",
    ):
        env.pop(name, None)
    assert docbus(env, "migrate").returncode == 0
    db = Database(f"sqlite+aiosqlite:///{tmp_path / 'data' / 'docbus.sqlite3'}")
    try:
        published, waiting = await accept(db, [submission((NATIONAL,)), submission((NATIONAL,))])
        await publish(db, [published])  # no routes file: published is settled
        await asyncio.sleep(1.0)  # older than the 0.5 s retention below

        refused = docbus(env, "payloads", "purge")
        assert refused.returncode == 2 and "DOCBUS_PAYLOAD_RETENTION_DAYS" in refused.stderr
        days = str(0.5 / 86400)
        dry = docbus(env, "payloads", "purge", "--days", days, "--dry-run")
        assert dry.returncode == 0, dry.stderr
        assert dry.stdout.startswith("1 payloads would be deleted; 1 older")
        assert await payload_ids(db) == {published, waiting}
        done = docbus(env, "payloads", "purge", "--days", days)
        assert done.returncode == 0, done.stderr
        assert done.stdout.startswith("1 payloads deleted; 1 older")
        assert await payload_ids(db) == {waiting}
    finally:
        await db.dispose()
