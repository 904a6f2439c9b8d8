"""The store's fast write paths and their coordination, on SQLite and PostgreSQL where both apply.

- Intake's SQLite path (plain sqlite3, no SQLAlchemy) stores rows that every reader sees exactly as SQLAlchemy would
  have stored them; a plain transaction that fails leaves nothing behind.
- Processes sharing a SQLite file order their writes with a file lock: a writer waits while another process
  holds it, proceeds once it is released, and a waiter that is cancelled never leaves it held.
- With gateways that leave publishing to workers (``DOCBUS_RELAY_ENABLED=false``), a worker's relay publishes
  what they accept, exactly once.
- An expiring credential is looked up once, however many requests present it at that moment.
- A relay whose sweeps keep failing pauses longer and longer between them, and publishes once they succeed.
- A sweeper marks a published batch in the transaction that claims the next one; stopped in between, it marks
  the batch before it ends, so nothing is published twice.
- The hot-path reads (``Database.reading``) see what was committed, and their statements share one snapshot.
"""

from __future__ import annotations

import asyncio
import dataclasses
import fcntl
import os
import sqlite3
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import event, insert, make_url, select, text, update

from docbus.broker.base import PublishedRecord
from docbus.broker.embedded import EmbeddedBroker
from docbus.envelope import MessageKind
from docbus.relay import OutboxRelay, claimed_publications, mark_published, publication_for
from docbus.store.agencies import AgencyDirectory
from docbus.store.audit import as_utc
from docbus.store.database import Database
from docbus.store.intake_writer import IntakeWriter
from docbus.store.messages import MessageStore
from docbus.store.tables import outbox, stream_cursors

from .helpers import row_counts
from .test_store_contract import submission

HOLDER = """
import fcntl, os, sys, time
fd = os.open(sys.argv[1], os.O_RDWR | os.O_CREAT, 0o600)
fcntl.flock(fd, fcntl.LOCK_EX)
print("locked", flush=True)
sys.stdin.readline()  # hold until told
"""


def lock_path(db: Database) -> Path:
    return Path(f"{make_url(db.url).database}-writelock")


@contextmanager
def held_by_another_process(path: Path) -> Iterator[subprocess.Popen[str]]:
    """A separate process holding the write lock until ``release`` or the end of the caller's block."""
    with subprocess.Popen(
        [sys.executable, "-c", HOLDER, str(path)], stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True
    ) as proc:
        assert proc.stdout is not None and proc.stdout.readline().strip() == "locked"
        try:
            yield proc
        finally:
            release(proc)


def release(proc: subprocess.Popen[str]) -> None:
    """Tell the holder to exit (it drops the lock with its file) and wait until it has."""
    if proc.poll() is None:
        assert proc.stdin is not None
        proc.stdin.write("\n")
        proc.stdin.flush()
    proc.wait(timeout=10)


def lock_is_free(path: Path) -> bool:
    fd = os.open(path, os.O_RDWR)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        return False
    finally:
        os.close(fd)  # closing drops the lock if we got it
    return True


async def test_rows_written_inline_read_back_as_written(db: Database) -> None:
    writer = IntakeWriter(db, lease_owner="gateway:test", lease_seconds=15)
    await writer.start()
    try:
        sub = submission(b"<doc/>", dedup="read-back")
        outcome = await writer.submit(sub)
    finally:
        await writer.aclose()
    store = MessageStore(db)
    found = await store.with_timeline(outcome.message_id)
    assert found is not None
    record, timeline = found
    env = sub.envelope
    assert (record.id, record.sender, record.receivers, record.sha256, record.size, record.status) == (
        env.message_id,
        env.sender,
        list(env.receivers),
        env.sha256,
        env.size,
        "ACCEPTED",
    )
    assert record.received_at == env.received_at  # to the microsecond, time zone included
    assert await store.receipt(outcome.message_id) == sub.receipt
    assert await store.payload(outcome.message_id) == b"<doc/>"
    assert [(e.seq, e.type, e.at) for e in timeline] == [(1, "ACCEPTED", env.received_at)]


async def test_a_failing_sweep_backs_off_and_recovers(db: Database) -> None:
    class FlakyBroker(EmbeddedBroker):
        """Refuses (as a bug or an unexpected error would) until ``healed``."""

        healed = False
        calls = 0

        async def ensure_topics(self, topics: Any) -> None:
            self.calls += 1
            if not self.healed:
                raise RuntimeError("unexpected failure")
            await super().ensure_topics(topics)

    gateway_writer = IntakeWriter(db, lease_owner=None)
    broker = FlakyBroker(db)
    # A failed sweep gives its claim back: the row is tried again after the pause, not after the 60 s lease.
    relay = OutboxRelay(db, broker, owner="worker:test", sweep=True, sweep_interval=0.05, lease_seconds=60)
    await gateway_writer.start()
    await broker.start()
    try:
        await gateway_writer.submit(submission(b"<backoff/>", dedup="backoff"))
        await relay.start()
        await asyncio.sleep(1.5)
        # Without the pause the sweeper would have tried about 30 times (every 0.05 s); with it about 4, and
        # without giving the claim back only once.
        assert 2 <= broker.calls <= 6, broker.calls
        assert await relay.backlog() == 1
        broker.healed = True
        deadline = time.monotonic() + 15
        while await relay.backlog() > 0:
            assert time.monotonic() < deadline, "the relay did not publish once the failure was gone"
            await asyncio.sleep(0.1)
        assert relay.published == 1
    finally:
        await relay.aclose()
        await gateway_writer.aclose()
        await broker.aclose()


async def test_a_sweeper_stopped_before_marking_marks_before_it_ends(
    db: Database, monkeypatch: pytest.MonkeyPatch
) -> None:
    broker_db = Database(db.url)  # the same database, another object: the relay publishes, then marks on its own
    broker = EmbeddedBroker(broker_db)
    gateway_writer = IntakeWriter(db, lease_owner=None)
    relay = OutboxRelay(db, broker, owner="worker:test", sweep=True, sweep_interval=0.05)
    mark_and_claim = relay._mark_and_claim
    waiting = asyncio.Event()

    async def stuck_behind_the_write_lock(unmarked: Any, *, claim: bool = True) -> Any:
        if unmarked and claim:  # the transaction that would mark this batch and claim the next
            waiting.set()
            await asyncio.Event().wait()
        return await mark_and_claim(unmarked, claim=claim)

    monkeypatch.setattr(relay, "_mark_and_claim", stuck_behind_the_write_lock)
    await gateway_writer.start()
    await broker.start()
    try:
        outcome = await gateway_writer.submit(submission(b"<stopped/>", dedup="stopped"))
        await relay.start()
        await asyncio.wait_for(waiting.wait(), 15)
        assert await relay.backlog() == 1  # published, not marked yet
        await relay.aclose()
        assert await relay.backlog() == 0
        found = await MessageStore(db).with_timeline(outcome.message_id)
        assert found is not None
        assert [e.type for e in found[1]] == ["ACCEPTED", "PUBLISHED"]
        assert found[0].status == "PUBLISHED"
    finally:
        await relay.aclose()
        await gateway_writer.aclose()
        await broker.aclose()
        await broker_db.dispose()


@pytest.mark.parametrize("database_url", ["sqlite"], indirect=True)
async def test_the_fast_claim_read_of_a_sqlite_file_builds_the_same_records(db: Database) -> None:
    plain = submission("<văn-bản/>".encode(), dedup="plain")
    answer = submission(b"<status/>", dedup="answer")
    answer = dataclasses.replace(
        answer,
        envelope=dataclasses.replace(
            answer.envelope,
            kind=MessageKind.STATUS,
            receivers=("000.00.00.G22", "000.00.00.H41"),
            response_for="000.00.00.G22,2026/11/27,1/UBND",
            status_code="03",
            received_at=datetime(2026, 11, 27, 7, 0, 0, tzinfo=UTC),  # no microseconds
        ),
    )
    claim_checked = dataclasses.replace(submission(b"", dedup="big"), payload_ref="sha256/ab/abcdef")
    writer = IntakeWriter(db, lease_owner="gateway:same", lease_seconds=60)
    await writer.start()
    try:
        for sub in (plain, answer, claim_checked):
            await writer.submit(sub)
    finally:
        await writer.aclose()
    async with db.reader.connect() as conn:
        ids = list((await conn.scalars(select(outbox.c.id).order_by(outbox.c.id))).all())
        general = await claimed_publications(conn, ids, "gateway:same")
    async with db.reading() as inline:
        fast = await claimed_publications(inline, ids, "gateway:same")
        assert await claimed_publications(inline, ids, "another-relay") == []
    assert [p.message_id for p in fast] == [s.envelope.message_id for s in (plain, answer, claim_checked)]
    assert fast == general
    # the records the eager path builds from memory
    assert [p.record for p in fast] == [publication_for(sub).record for sub in (plain, answer, claim_checked)]


async def test_marking_a_batch_published_sets_its_rows_events_and_status_once(db: Database) -> None:
    subs = [submission(f"<mark{i}/>".encode(), dedup=f"mark-{i}") for i in range(3)]
    writer = IntakeWriter(db, lease_owner="gateway:mark", lease_seconds=60)
    await writer.start()
    try:
        for sub in subs:
            await writer.submit(sub)
    finally:
        await writer.aclose()
    batch = [publication_for(sub) for sub in subs]
    where = [PublishedRecord("t", 1, 100 + i) for i in range(3)]
    async with db.transaction() as conn:
        await mark_published(conn, batch, where, owner="worker:mark")
    async with db.transaction() as conn:  # a relay that lost the race marks the same batch again: nothing changes
        await mark_published(conn, batch, where, owner="worker:late")
    async with db.reader.connect() as conn:
        rows = {r.message_id: r for r in await conn.execute(select(outbox).order_by(outbox.c.id))}
        # Stored alike too (on SQLite a text comparison): the outbox row's time and its PUBLISHED event's time.
        same = await conn.scalars(
            text(
                "SELECT o.published_at = e.at FROM outbox o JOIN events e ON e.message_id = o.message_id"
                " WHERE e.type = 'PUBLISHED'"
            )
        )
        assert [bool(v) for v in same] == [True] * 3
    store = MessageStore(db)
    for i, sub in enumerate(subs):
        found = await store.with_timeline(sub.envelope.message_id)
        assert found is not None
        record, timeline = found
        assert record.status == "PUBLISHED"
        assert [e.type for e in timeline] == ["ACCEPTED", "PUBLISHED"]
        assert timeline[1].detail == {"topic": "t", "partition": 1, "offset": 100 + i}
        row = rows[sub.envelope.message_id]
        assert row.claimed_by == "worker:mark"
        assert row.published_at is not None
        assert as_utc(row.published_at) == timeline[1].at  # one instant, whichever way it was written


async def test_hot_path_reads_see_commits_and_keep_one_snapshot(db: Database) -> None:
    async def position(conn: Any) -> int | None:
        return await conn.scalar(select(stream_cursors.c.position).where(stream_cursors.c.name == "snapshot"))

    async with db.transaction() as conn:
        await conn.execute(insert(stream_cursors).values(name="snapshot", position=1))
    async with db.reading() as conn:
        if not db.is_sqlite:  # as the callers that need it do; SQLite's read transaction is a snapshot already
            await conn.execute(text("SET TRANSACTION ISOLATION LEVEL REPEATABLE READ"))
        assert await position(conn) == 1
        # A writer commits while the read is open (on SQLite on the same thread: the read must not block it).
        async with db.transaction() as writer:
            await writer.execute(update(stream_cursors).where(stream_cursors.c.name == "snapshot").values(position=2))
        assert await position(conn) == 1
    async with db.reading() as conn:
        assert await position(conn) == 2


@pytest.mark.parametrize("database_url", ["sqlite"], indirect=True)
async def test_a_writer_waits_for_another_process_and_goes_on_when_it_lets_go(db: Database) -> None:
    writer = IntakeWriter(db)
    await writer.start()
    try:
        with held_by_another_process(lock_path(db)) as holder:
            pending = asyncio.create_task(writer.submit(submission(b"<waits/>", dedup="waits")))
            await asyncio.sleep(0.5)
            assert not pending.done(), "the write went ahead while another process held the lock"
            assert await row_counts(db) == {"messages": 0, "payloads": 0, "events": 0, "outbox": 0}
            release(holder)
            outcome = await asyncio.wait_for(pending, timeout=10)  # liveness: it goes on once the lock is free
    finally:
        await writer.aclose()
    assert not outcome.replayed
    assert (await row_counts(db))["messages"] == 1


@pytest.mark.parametrize("database_url", ["sqlite"], indirect=True)
async def test_a_cancelled_waiter_never_leaves_the_lock_held(db: Database) -> None:
    path = lock_path(db)
    with held_by_another_process(path) as holder:

        async def write() -> None:
            async with db.transaction() as conn:
                await conn.execute(a_small_write())

        waiting = asyncio.create_task(write())
        await asyncio.sleep(0.3)
        waiting.cancel()
        with pytest.raises(asyncio.CancelledError):
            await waiting
        release(holder)
    # The helper thread may still get the lock after the cancel: it must hand it straight back.
    deadline = time.monotonic() + 5
    while not lock_is_free(path):
        assert time.monotonic() < deadline, "the lock stayed held after its waiter was cancelled"
        await asyncio.sleep(0.05)
    async with db.transaction() as conn:  # and this process can still write
        await conn.execute(a_small_write())


@pytest.mark.parametrize("database_url", ["sqlite"], indirect=True)
async def test_a_plain_transaction_that_fails_leaves_nothing_and_the_next_one_commits(db: Database) -> None:
    """Intake's transactions on a SQLite file skip SQLAlchemy: what fails inside one is rolled back, its
    connection is replaced, the write lock is free again, and the next transaction commits for every reader."""
    rows = "INSERT INTO stream_cursors (name, position) VALUES (?, 0)"

    async def twice_the_same_key() -> None:
        async with db.plain_transaction() as conn:
            conn.execute(rows, ("plain-a",))
            conn.execute(rows, ("plain-a",))

    async def stopped_half_way() -> None:
        async with db.plain_transaction() as conn:
            conn.execute(rows, ("plain-b",))
            raise RuntimeError("stopped half way")

    with pytest.raises(sqlite3.IntegrityError):
        await twice_the_same_key()
    assert lock_is_free(lock_path(db))
    with pytest.raises(RuntimeError, match="stopped"):
        await stopped_half_way()
    async with db.plain_transaction() as conn:
        conn.execute(rows, ("plain-c",))
    async with db.reader.connect() as conn:
        names = {r.name for r in await conn.execute(select(stream_cursors.c.name))}
    assert {"plain-a", "plain-b", "plain-c"} & names == {"plain-c"}


@pytest.mark.parametrize("database_url", ["postgres"], indirect=True)
async def test_plain_transactions_are_for_a_sqlite_file_only(db: Database) -> None:
    assert not db.on_sqlite_file
    with pytest.raises(RuntimeError, match="SQLite file"):
        async with db.plain_transaction():
            pass


def a_small_write() -> Any:
    """Any small write: a row of its own in a table no other test here reads."""
    return insert(stream_cursors).values(name=f"probe-{time.monotonic_ns()}", position=0)


async def test_a_worker_publishes_what_gateways_leave_unleased(db: Database) -> None:
    gateway_writer = IntakeWriter(db, lease_owner=None)  # DOCBUS_RELAY_ENABLED=false: no eager publishing
    broker = EmbeddedBroker(db)
    relay = OutboxRelay(db, broker, owner="worker:test", sweep=True, sweep_interval=0.05)
    await gateway_writer.start()
    await broker.start()
    try:
        outcomes = await asyncio.gather(
            *(gateway_writer.submit(submission(f"<m{i}/>".encode(), dedup=f"w{i}")) for i in range(40))
        )
        await relay.start()
        deadline = time.monotonic() + 10
        while await relay.backlog() > 0:
            assert time.monotonic() < deadline, "the worker's relay did not publish the backlog"
            await asyncio.sleep(0.02)
        more = await gateway_writer.submit(submission(b"<late/>", dedup="late"))
        while await relay.backlog() > 0:
            assert time.monotonic() < deadline + 5, "a message accepted later was not published"
            await asyncio.sleep(0.02)
    finally:
        await relay.aclose()
        await gateway_writer.aclose()
        await broker.aclose()
    store = MessageStore(db)
    for outcome in [*outcomes, more]:
        types = [e.type for e in await store.timeline(outcome.message_id)]
        assert types == ["ACCEPTED", "PUBLISHED"], types


async def test_an_expired_credential_is_looked_up_once_for_all_requests_presenting_it(db: Database) -> None:
    directory = AgencyDirectory(db, cache_seconds=60)
    _, key = await directory.add("000.00.00.G22", name="Văn phòng Chính phủ")
    lookups = 0

    def count(_conn: Any, _cursor: Any, statement: str, *_args: Any) -> None:
        nonlocal lookups
        if "FROM agencies" in statement and "key_hash" in statement:
            lookups += 1

    engine = db.reader.sync_engine
    event.listen(engine, "before_cursor_execute", count)
    try:
        agencies = await asyncio.gather(*(directory.authenticate(key) for _ in range(50)))
        assert {a.organ_id for a in agencies} == {"000.00.00.G22"}
        assert lookups == 1
        await directory.authenticate(key)
        assert lookups == 1  # cached now
        new_key = await directory.rotate_key("000.00.00.G22")
        with pytest.raises(Exception, match="not known"):
            await directory.authenticate(key)
        assert (await directory.authenticate(new_key)).organ_id == "000.00.00.G22"
    finally:
        event.remove(engine, "before_cursor_execute", count)
