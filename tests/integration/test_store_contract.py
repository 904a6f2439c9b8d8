"""The store contract, run on SQLite and on a real PostgreSQL: the same promises on both."""

from __future__ import annotations

import asyncio
import hashlib
import itertools
from datetime import UTC, datetime, timedelta

import pytest
from alembic import command
from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext
from sqlalchemy import text
from sqlalchemy.exc import IntegrityError

from docbus.envelope import Envelope, MessageKind, SchemaRef
from docbus.errors import Forbidden, IdempotencyConflict, Unauthenticated, ValidationFailed
from docbus.ids import new_message_id, new_trace_id
from docbus.store.agencies import AgencyDirectory, Role
from docbus.store.audit import GENESIS, event_hash
from docbus.store.database import Database
from docbus.store.intake_writer import IntakeWriter, Submission
from docbus.store.messages import MessageStore, NewEvent, append_events_in, read_tails
from docbus.store.migrate import alembic_config
from docbus.store.tables import metadata

from .helpers import row_counts


def submission(body: bytes, *, dedup: str, sender: str = "000.00.00.G22") -> Submission:
    sha = hashlib.sha256(body).hexdigest()
    env = Envelope(
        message_id=new_message_id(),
        kind=MessageKind.EDOC,
        schema=SchemaRef("qcvn102.edoc", "2016.1"),
        sender=sender,
        receivers=("000.00.00.H41",),
        business_id="doc-1",
        sha256=sha,
        size=len(body),
        received_at=datetime.now(UTC),
        content_type="application/xml",
        idempotency_key=None,
        trace_id=new_trace_id(),
    )
    return Submission(env, body, dedup, receipt=f'{{"id":"{env.message_id}"}}'.encode(), topic="t")


async def test_migrations_match_the_tables(db: Database) -> None:
    def diff(sync_conn: object) -> list[object]:
        context = MigrationContext.configure(sync_conn)  # type: ignore[arg-type]
        return list(compare_metadata(context, metadata))

    async with db.reader.connect() as conn:
        assert await conn.run_sync(diff) == []


async def test_writer_batches_and_settles_identity_inside_the_transaction(db: Database) -> None:
    writer = IntakeWriter(db)
    await writer.start()
    try:
        distinct = [submission(f"<m{i}/>".encode(), dedup=f"k{i}") for i in range(50)]
        twins = [submission(b"<same/>", dedup="twin") for _ in range(5)]
        conflicting = submission(b"<other/>", dedup="twin")
        results = await asyncio.gather(
            *(writer.submit(s) for s in [*distinct, *twins]),
            writer.submit(conflicting),
            return_exceptions=True,
        )
    finally:
        await writer.aclose()
    fresh = results[:50]
    assert all(not r.replayed for r in fresh if not isinstance(r, BaseException))
    twin_results = results[50:55]
    assert not isinstance(twin_results[0], BaseException)
    assert len({r.message_id for r in twin_results if not isinstance(r, BaseException)}) == 1
    assert sum(1 for r in twin_results if not isinstance(r, BaseException) and not r.replayed) == 1
    assert isinstance(results[55], IdempotencyConflict)
    assert await row_counts(db) == {"messages": 51, "payloads": 51, "events": 51, "outbox": 51}
    # Group commit: far fewer transactions than messages.
    assert writer.committed_batches < 20


async def test_writer_waits_for_company_only_while_traffic_flows(db: Database) -> None:
    """Below saturation a submission that finds the writer free waits up to ``max_wait`` for others to share its
    transaction; a full batch ends the wait, and on a quiet bus a lone submission does not wait at all."""
    writer = IntakeWriter(db, max_batch=3, max_wait=30.0)  # a wait no test would sit out
    await writer.start()
    try:
        # Quiet bus (nothing committed yet): committed at once, not after 30 s.
        await asyncio.wait_for(writer.submit(submission(b"<lone/>", dedup="lone")), 10)
        assert writer.committed_batches == 1
        # Traffic flows now: the next one waits for company; the third of a batch of three ends the wait.
        first = asyncio.ensure_future(writer.submit(submission(b"<a/>", dedup="a")))
        await asyncio.sleep(0.2)
        assert not first.done()
        second = asyncio.ensure_future(writer.submit(submission(b"<b/>", dedup="b")))
        await asyncio.sleep(0.2)
        assert not first.done() and not second.done()
        third = writer.submit(submission(b"<c/>", dedup="c"))
        outcomes = await asyncio.wait_for(asyncio.gather(first, second, third), 10)
    finally:
        await writer.aclose()
    assert [o.replayed for o in outcomes] == [False, False, False]
    assert writer.committed_batches == 2
    assert writer.committed_messages == 4
    assert await row_counts(db) == {"messages": 4, "payloads": 4, "events": 4, "outbox": 4}


async def test_writer_without_a_wait_commits_each_lone_submission(db: Database) -> None:
    writer = IntakeWriter(db, max_wait=0.0)
    await writer.start()
    try:
        for i in range(3):
            await writer.submit(submission(f"<s{i}/>".encode(), dedup=f"s{i}"))
    finally:
        await writer.aclose()
    assert writer.committed_batches == 3


async def test_identity_survives_a_new_writer(db: Database) -> None:
    first_writer = IntakeWriter(db)
    await first_writer.start()
    original = await first_writer.submit(submission(b"<x/>", dedup="persisted"))
    await first_writer.aclose()
    second_writer = IntakeWriter(db)
    await second_writer.start()
    try:
        replay = await second_writer.submit(submission(b"<x/>", dedup="persisted"))
        with pytest.raises(IdempotencyConflict):
            await second_writer.submit(submission(b"<y/>", dedup="persisted"))
    finally:
        await second_writer.aclose()
    assert replay.replayed
    assert replay.receipt == original.receipt
    assert replay.message_id == original.message_id


async def test_two_writers_racing_store_one_message(db: Database) -> None:
    """Two gateways (two writers, two engines) get the same submission at once: one row, one answer."""
    other = Database(db.url)
    writers = [IntakeWriter(db), IntakeWriter(other)]
    for w in writers:
        await w.start()
    try:
        results = await asyncio.gather(
            *(w.submit(submission(b"<race/>", dedup=f"race-{i}")) for i in range(20) for w in writers)
        )
    finally:
        for w in writers:
            await w.aclose()
        await other.dispose()
    by_key: dict[str, set[str]] = {}
    for i, r in enumerate(results):
        by_key.setdefault(f"race-{i // 2}", set()).add(r.message_id)
    assert all(len(ids) == 1 for ids in by_key.values())
    assert (await row_counts(db))["messages"] == 20


async def test_events_extend_a_verifiable_hash_chain(db: Database) -> None:
    writer = IntakeWriter(db)
    await writer.start()
    outcome = await writer.submit(submission(b"<chain/>", dedup="chain"))
    await writer.aclose()
    store = MessageStore(db)
    await store.append_event(outcome.message_id, "PUBLISHED", actor="relay", detail={"offset": 7}, status="PUBLISHED")
    await store.append_event(outcome.message_id, "DELIVERED", actor="national_axis", destination="national_axis")
    timeline = await store.timeline(outcome.message_id)
    assert [e.type for e in timeline] == ["ACCEPTED", "PUBLISHED", "DELIVERED"]
    prev = GENESIS
    for e in timeline:
        assert e.prev_hash == prev
        expected = event_hash(
            prev,
            message_id=outcome.message_id,
            seq=e.seq,
            type=e.type,
            at=e.at,
            actor=e.actor,
            destination=e.destination,
            detail=e.detail,
        )
        assert e.hash == expected
        prev = e.hash
    record = await store.get(outcome.message_id)
    assert record is not None
    assert record.status == "PUBLISHED"
    assert await store.payload(outcome.message_id) == b"<chain/>"


async def test_an_event_keeps_when_it_happened_apart_from_when_it_was_written(db: Database) -> None:
    writer = IntakeWriter(db)
    await writer.start()
    sub = submission(b"<when/>", dedup="when")
    outcome = await writer.submit(sub)
    await writer.aclose()
    store = MessageStore(db)
    acknowledged = datetime.now(UTC) - timedelta(seconds=5)
    before_write = datetime.now(UTC)
    await store.append_events([NewEvent(outcome.message_id, "DELIVERED", actor="axis", at=acknowledged)])
    await store.append_event(outcome.message_id, "NOTE", actor="t")
    accepted, delivered, note = await store.timeline(outcome.message_id)
    assert accepted.at == sub.envelope.received_at <= accepted.recorded_at  # arrival, then the group commit
    assert delivered.at == acknowledged
    assert before_write <= delivered.recorded_at <= note.recorded_at
    assert note.at == note.recorded_at  # no time given: it happened when it was written
    shown = delivered.as_dict()
    assert datetime.fromisoformat(shown["at"]) == acknowledged
    assert datetime.fromisoformat(shown["recorded_at"]) == delivered.recorded_at


async def test_upgrading_from_0004_takes_each_events_time_as_its_write_time(database_url: str) -> None:
    """Before 0005 an event's time was its write time: existing rows get it in both columns."""
    config = alembic_config(database_url)
    await asyncio.to_thread(command.upgrade, config, "0004")
    db = Database(database_url)
    try:
        written = datetime(2026, 11, 1, 8, 30, tzinfo=UTC)
        async with db.transaction() as conn:  # what 0004's writer stored: no recorded_at column yet
            sub = submission(b"<old/>", dedup="old")
            env = sub.envelope
            await conn.execute(
                text(
                    "INSERT INTO messages (id, kind, schema_id, schema_version, sender, receivers, business_id,"
                    " sha256, size, content_type, received_at, dedup_key, trace_id, status, receipt)"
                    " VALUES (:id, 'edoc', 's', '1', :sender, '[]', 'b', :sha, 1, 'application/xml', :at, 'old',"
                    " 't', 'ACCEPTED', :receipt)"
                ),
                {"id": env.message_id, "sender": env.sender, "sha": env.sha256, "at": written, "receipt": b"{}"},
            )
            await conn.execute(
                text(
                    "INSERT INTO events (message_id, seq, type, at, actor, detail, prev_hash, hash)"
                    " VALUES (:id, 1, 'ACCEPTED', :at, :sender, '{}', :genesis, 'h')"
                ),
                {"id": env.message_id, "at": written, "sender": env.sender, "genesis": GENESIS},
            )
        await asyncio.to_thread(command.upgrade, config, "head")
        (event,) = await MessageStore(db).timeline(env.message_id)
        assert event.at == event.recorded_at == written
    finally:
        await db.dispose()


async def test_events_appended_on_stale_tails_collide_as_integrity_errors(db: Database) -> None:
    """The relay builds PUBLISHED events on tails read before its transaction; a chain that grew meanwhile must
    surface as SQLAlchemy's IntegrityError (which it retries on), on every write path, and store nothing."""
    writer = IntakeWriter(db)
    await writer.start()
    outcome = await writer.submit(submission(b"<stale/>", dedup="stale"))
    await writer.aclose()
    store = MessageStore(db)
    async with db.reading() as conn:
        stale = await read_tails(conn, [outcome.message_id])
    await store.append_event(outcome.message_id, "FORWARDING", actor="national_axis")
    with pytest.raises(IntegrityError):
        async with db.transaction() as conn:
            await append_events_in(conn, [NewEvent(outcome.message_id, "PUBLISHED", "relay")], tails=stale)
    assert [e.type for e in await store.timeline(outcome.message_id)] == ["ACCEPTED", "FORWARDING"]
    await store.append_events([NewEvent(outcome.message_id, "PUBLISHED", "relay", status="PUBLISHED")])
    assert [(e.seq, e.type) for e in await store.timeline(outcome.message_id)] == [
        (1, "ACCEPTED"),
        (2, "FORWARDING"),
        (3, "PUBLISHED"),
    ]


async def test_agency_directory(db: Database) -> None:
    directory = AgencyDirectory(db, cache_seconds=0)
    agency, key = await directory.add("000.00.00.H41", name="UBND Tỉnh Nghệ An")
    assert agency.level == 1
    assert (await directory.authenticate(key)).organ_id == "000.00.00.H41"
    with pytest.raises(ValidationFailed):
        await directory.add("000.00.00.H41", name="again")
    with pytest.raises(ValidationFailed):
        await directory.add("vxp.saas.03", name="not an organ id")
    operator, _ = await directory.add("H41.01", name="Trung tâm điều hành", role=Role.OPERATOR)
    assert operator.role is Role.OPERATOR
    new_key = await directory.rotate_key("000.00.00.H41")
    with pytest.raises(Unauthenticated):
        await directory.authenticate(key)
    assert (await directory.authenticate(new_key)).organ_id == "000.00.00.H41"
    with pytest.raises(Unauthenticated):
        await directory.authenticate(None)
    assert [a.organ_id for a in await directory.list()] == ["000.00.00.H41", "H41.01"]


async def test_a_suspended_agency_is_refused_with_the_reason_until_resumed(db: Database) -> None:
    directory = AgencyDirectory(db, cache_seconds=60)  # suspending clears this process' cache
    _agency, key = await directory.add("000.00.00.H41", name="UBND Tỉnh Nghệ An")
    assert (await directory.authenticate(key)).suspended_at is None  # cached now
    await directory.suspend("000.00.00.H41", "khóa API bị lộ, đang kiểm tra / key leaked, under review", by="H41.01")
    with pytest.raises(Forbidden) as refused:
        await directory.authenticate(key)
    assert "key leaked, under review" in refused.value.detail and "000.00.00.H41" in refused.value.detail
    listed = await directory.get("000.00.00.H41")
    assert listed is not None and listed.suspended_at is not None
    assert listed.suspended_reason == "khóa API bị lộ, đang kiểm tra / key leaked, under review"
    assert listed.suspended_by == "H41.01"
    await directory.resume("000.00.00.H41")
    assert (await directory.authenticate(key)).organ_id == "000.00.00.H41"  # the same key again
    for reason in ("", "   ", "x" * 501):
        with pytest.raises(ValidationFailed):
            await directory.suspend("000.00.00.H41", reason, by="H41.01")
    with pytest.raises(ValidationFailed):
        await directory.suspend("000.00.00.H99", "no such agency", by="H41.01")
    with pytest.raises(ValidationFailed):
        await directory.resume("000.00.00.H99")


async def test_a_rotation_may_keep_the_old_key_working_for_a_while(db: Database) -> None:
    directory = AgencyDirectory(db, cache_seconds=0)
    _agency, first = await directory.add("000.00.00.H41", name="UBND Tỉnh Nghệ An")
    second = await directory.rotate_key("000.00.00.H41", keep_old_for=timedelta(hours=1))
    for key in (first, second):  # both work during the overlap
        assert (await directory.authenticate(key)).organ_id == "000.00.00.H41"
    listed = await directory.get("000.00.00.H41")
    assert listed is not None and listed.previous_key_expires_at is not None
    assert timedelta(minutes=59) < listed.previous_key_expires_at - datetime.now(UTC) <= timedelta(hours=1)

    third = await directory.rotate_key("000.00.00.H41", keep_old_for=timedelta(seconds=1))
    with pytest.raises(Unauthenticated):  # only the key just replaced overlaps; the one before it is gone
        await directory.authenticate(first)
    assert (await directory.authenticate(second)).organ_id == "000.00.00.H41"
    await asyncio.sleep(1.1)
    with pytest.raises(Unauthenticated):  # the overlap is over
        await directory.authenticate(second)
    assert (await directory.authenticate(third)).organ_id == "000.00.00.H41"

    fourth = await directory.rotate_key("000.00.00.H41", keep_old_for=timedelta(days=1))
    fifth = await directory.rotate_key("000.00.00.H41")  # no overlap: every earlier key ends now
    for key in (third, fourth):
        with pytest.raises(Unauthenticated):
            await directory.authenticate(key)
    assert (await directory.authenticate(fifth)).organ_id == "000.00.00.H41"
    gone = await directory.get("000.00.00.H41")
    assert gone is not None and gone.previous_key_expires_at is None
    for bad in (timedelta(0), timedelta(days=31)):
        with pytest.raises(ValidationFailed):
            await directory.rotate_key("000.00.00.H41", keep_old_for=bad)
    with pytest.raises(ValidationFailed):
        await directory.rotate_key("000.00.00.H99")


async def test_binding_a_renewed_certificate_may_keep_the_old_one_accepted_for_a_while(db: Database) -> None:
    directory = AgencyDirectory(db, cache_seconds=0)
    _agency, key = await directory.add("000.00.00.H41", name="UBND Tỉnh Nghệ An")
    old, new, newer, stranger = "a1" * 32, "b2" * 32, "c3" * 32, "d4" * 32
    with pytest.raises(ValidationFailed, match=r"no old certificate to keep: 000\.00\.00\.H41 has none bound"):
        await directory.bind_certificate("000.00.00.H41", old, keep_old_for=timedelta(hours=1))
    await directory.bind_certificate("000.00.00.H41", old)
    with pytest.raises(ValidationFailed, match="this very one bound already"):
        await directory.bind_certificate("000.00.00.H41", old, keep_old_for=timedelta(hours=1))
    for bad in (timedelta(0), timedelta(days=31)):
        with pytest.raises(ValidationFailed, match="at most 30 days"):
            await directory.bind_certificate("000.00.00.H41", new, keep_old_for=bad)

    bound = await directory.bind_certificate("000.00.00.H41", new, keep_old_for=timedelta(hours=1))
    kept = bound.previous_certificate()
    assert bound.client_cert_sha256 == new and kept is not None and kept[0] == old
    assert kept[1] == bound.previous_client_cert_expires_at
    assert timedelta(minutes=59) < kept[1] - datetime.now(UTC) <= timedelta(hours=1)
    assert bound.as_dict()["previous_client_cert_sha256"] == old
    for shown in (new, old):  # both are accepted during the change-over
        assert (await directory.authenticate(key, shown)).organ_id == "000.00.00.H41"
    for shown in (stranger, None):
        with pytest.raises(Forbidden, match=r"begins b2b2b2b2b2b2b2b2 \(or, until .* UTC, the one whose fing"):
            await directory.authenticate(key, shown)

    await directory.bind_certificate("000.00.00.H41", newer, keep_old_for=timedelta(seconds=1))
    with pytest.raises(Forbidden):  # only the certificate just replaced overlaps; the one before it is gone
        await directory.authenticate(key, old)
    assert (await directory.authenticate(key, new)).organ_id == "000.00.00.H41"
    await asyncio.sleep(1.1)
    with pytest.raises(Forbidden) as over:  # the change-over is over
        await directory.authenticate(key, new)
    assert "(or, until" not in over.value.detail
    listed = await directory.get("000.00.00.H41")
    assert listed is not None and listed.previous_certificate() is None
    assert listed.as_dict()["previous_client_cert_sha256"] is None

    await directory.bind_certificate("000.00.00.H41", new, keep_old_for=timedelta(days=1))
    with pytest.raises(ValidationFailed, match="unbinding keeps no certificate"):
        await directory.bind_certificate("000.00.00.H41", None, keep_old_for=timedelta(days=1))
    unbound = await directory.bind_certificate("000.00.00.H41", None)  # lifts the binding and the change-over
    assert unbound.client_cert_sha256 is None and unbound.previous_client_cert_sha256 is None
    assert (await directory.authenticate(key, stranger)).organ_id == "000.00.00.H41"
    with pytest.raises(ValidationFailed, match=r"no agency 000\.00\.00\.H99"):
        await directory.bind_certificate("000.00.00.H99", new, keep_old_for=timedelta(hours=1))


async def test_every_change_to_an_agency_is_kept_in_its_chained_history(db: Database) -> None:
    from docbus.audit_verify import verify_agencies

    directory = AgencyDirectory(db, cache_seconds=0)
    _agency, first = await directory.add("000.00.00.H41", name="UBND Tỉnh Nghệ An", by="H41.01")
    second = await directory.rotate_key("000.00.00.H41", keep_old_for=timedelta(hours=1))
    await directory.bind_certificate("000.00.00.H41", "a1" * 32, by="H41.01")
    await directory.bind_certificate("000.00.00.H41", "b2" * 32, keep_old_for=timedelta(days=2))
    await directory.suspend("000.00.00.H41", "key under suspicion", by="H41.01")
    await directory.resume("000.00.00.H41", by="H41.02")
    await directory.bind_certificate("000.00.00.H41", None)
    with pytest.raises(ValidationFailed):  # refused changes leave nothing in the history
        await directory.suspend("000.00.00.H41", "", by="H41.01")
    await directory.add("000.00.00.G22", name="VPCP")

    history = await directory.history("000.00.00.H41")
    assert [(c.seq, c.action, c.actor) for c in history] == [
        (1, "registered", "H41.01"),
        (2, "key-rotated", "operator-cli"),
        (3, "certificate-bound", "H41.01"),
        (4, "certificate-bound", "operator-cli"),
        (5, "suspended", "H41.01"),
        (6, "resumed", "H41.02"),
        (7, "certificate-unbound", "operator-cli"),
    ]
    registered, rotated, bound, renewed = (c.detail for c in history[:4])
    assert (registered["name"], registered["role"], registered["key_prefix"]) == (
        "UBND Tỉnh Nghệ An",
        "agency",
        first[:10],
    )
    assert rotated["key_prefix"] == second[:10] and rotated["old_key_until"] is not None
    assert first not in str(history) and second not in str(history)  # keys never, only their prefixes
    assert bound == {"sha256": "a1" * 32, "previous": None, "previous_until": None}
    assert renewed["sha256"] == "b2" * 32 and renewed["previous"] == "a1" * 32 and renewed["previous_until"]
    assert history[6].detail == {"sha256": "b2" * 32}
    assert all(earlier.at <= later.at for earlier, later in itertools.pairwise(history))
    assert await verify_agencies(db) == (2, 8, [])
