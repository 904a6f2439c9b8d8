"""The outbox relay: moves accepted messages from the database to the broker, never losing one.

Two paths lead to the broker:

- **eager**: the gateway that committed a batch hands it straight to its relay (``notify``), which publishes
  from memory — no database read — and marks the rows published. The rows were written already leased to this
  relay, so no other relay touches them while it works.
- **sweeper**: a relay claims rows nobody holds — their lease ran out (their gateway crashed, or the broker was down
  when it tried), or they were never leased (gateways run with ``DOCBUS_RELAY_ENABLED=false`` and leave publishing
  to workers, so the gateways' CPU goes to intake) — and publishes them from the database. It looks every
  ``sweep_interval`` while idle and without pause while there is work.

On a SQLite file with Kafka one sweeper at a time (a lease) reads what to publish without claiming it, and marks
each batch in a transaction of its own while it reads and publishes the next: see ``_solo_sweep_loop``.

After the broker acknowledges (``acks=all``), one transaction marks the rows published and appends a PUBLISHED
event (topic, partition, offset) to each message's timeline. Under load a claiming sweeper marks a batch in the
same transaction that claims the next one (one wait for the write lock per batch instead of two); a sweeper that is
stopped in between marks its last batch before it ends. A crash between publishing and marking re-publishes the
batch: delivery to the broker is at least once, and consumers deduplicate by message id.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import sqlite3
from collections.abc import Collection, Iterable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

import orjson
from sqlalchemy import ColumnElement, and_, func, or_, select, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncConnection

from docbus.broker.base import Broker, BrokerUnavailable, OutgoingRecord, PublishedRecord
from docbus.broker.embedded import EmbeddedBroker
from docbus.envelope import MessageStatus
from docbus.metrics import PUBLISHED
from docbus.records import partition_key, record_headers, record_value
from docbus.store.database import Database, InlineConnection
from docbus.store.intake_writer import Submission
from docbus.store.leases import HeldLease
from docbus.store.messages import NewEvent, append_events_in, read_tails
from docbus.store.sqlite_intake import MESSAGE_COLUMNS, placeholders, stored_datetime
from docbus.store.tables import messages, outbox, payloads

log = logging.getLogger(__name__)

RELAY_ACTOR = "relay"
SWEEP_LEASE = "outbox-sweeper"  # the stream_cursors row whose holder sweeps a SQLite outbox (its position unused)
SWEEP_FAILURE_PAUSE_MAX = 5.0  # seconds between sweeps while they keep failing (the pause doubles up to this)
# The solo sweeper pauses this long after a batch smaller than SOLO_SWEEP_LINGER_BELOW rows.
SOLO_SWEEP_LINGER_SECONDS = 0.005
SOLO_SWEEP_LINGER_BELOW = 20


@dataclass(frozen=True, slots=True)
class PendingPublication:
    """One outbox row ready to publish: where it goes and the record to send."""

    outbox_id: int | None
    message_id: str
    record: OutgoingRecord


@dataclass(frozen=True, slots=True)
class _Unmarked:
    """A batch the broker acknowledged whose outbox rows and timelines are not marked yet."""

    batch: list[PendingPublication]
    published: Sequence[PublishedRecord]
    acknowledged_at: datetime  # when the broker acknowledged: the PUBLISHED events' time


class _Marks:
    """Batches the solo sweeper published, waiting for its marker; their outbox ids stay out of the next reads
    until their marks are committed (or have failed: then they are published again)."""

    def __init__(self) -> None:
        self.waiting: list[_Unmarked] = []
        self.outbox_ids: set[int] = set()
        self.wakeup = asyncio.Event()
        self.closing = False

    def add(self, batch: _Unmarked) -> None:
        self.waiting.append(batch)
        self.outbox_ids.update(p.outbox_id for p in batch.batch if p.outbox_id is not None)
        self.wakeup.set()

    def take(self) -> list[_Unmarked]:
        taken, self.waiting = self.waiting, []
        return taken

    def done(self, batches: list[_Unmarked]) -> None:
        for b in batches:
            self.outbox_ids.difference_update(p.outbox_id for p in b.batch if p.outbox_id is not None)


def publication_for(sub: Submission) -> PendingPublication:
    env = sub.envelope
    fields = {
        "message_id": env.message_id,
        "kind": env.kind.value,
        "schema_id": env.schema.id,
        "schema_version": env.schema.version,
        "sender": env.sender,
        "receivers": list(env.receivers),
        "business_id": env.business_id,
        "sha256": env.sha256,
        "size": env.size,
        "content_type": env.content_type,
        "trace_id": env.trace_id,
        "received_at": env.received_at,
        "response_for": env.response_for,
        "status_code": env.status_code,
        "payload_ref": sub.payload_ref,
    }
    record = OutgoingRecord(
        topic=sub.topic,
        key=partition_key(env.business_id, env.response_for),
        value=record_value(sub.payload, fields),
        headers=record_headers(fields),
    )
    return PendingPublication(None, env.message_id, record)


class OutboxRelay:
    """Publishes committed messages to the broker: eagerly from memory, and by sweeping the outbox."""

    def __init__(
        self,
        db: Database,
        broker: Broker,
        *,
        owner: str,
        lease_seconds: float = 15.0,
        sweep_interval: float = 1.0,
        batch_size: int = 500,
        sweep: bool = True,
    ) -> None:
        self._db = db
        self._broker = broker
        self.owner = owner
        self._lease = timedelta(seconds=lease_seconds)
        self._sweep_interval = sweep_interval
        self._batch_size = batch_size
        self._sweep_enabled = sweep
        self._queue: asyncio.Queue[tuple[float, PendingPublication]] = asyncio.Queue()
        self._tasks: list[asyncio.Task[None]] = []
        self.published = 0
        self.broker_healthy = True
        # Not with the embedded broker, whose publishing is itself a write in the same database.
        self._solo = db.is_sqlite and not isinstance(broker, EmbeddedBroker)

    async def start(self) -> None:
        self._tasks.append(asyncio.create_task(self._eager_loop(), name="docbus-relay-eager"))
        if self._sweep_enabled:
            self._tasks.append(asyncio.create_task(self._sweep_loop(), name="docbus-relay-sweeper"))

    async def backlog(self) -> int:
        """Outbox rows not yet published (all relays together)."""
        async with self._db.reader.connect() as conn:
            count = await conn.scalar(select(func.count()).select_from(outbox).where(outbox.c.published_at.is_(None)))
        return int(count or 0)

    async def aclose(self, drain_seconds: float = 5.0) -> None:
        """Stop; give what is queued for eager publishing a moment to go out (the sweeper covers the rest)."""
        deadline = asyncio.get_running_loop().time() + drain_seconds
        while not self._queue.empty() and asyncio.get_running_loop().time() < deadline and self.broker_healthy:
            await asyncio.sleep(0.05)
        for task in self._tasks:
            task.cancel()
        for task in self._tasks:
            with contextlib.suppress(asyncio.CancelledError):
                await task
        self._tasks.clear()

    def notify(self, committed: Sequence[Submission]) -> None:
        """Called by the intake writer right after a commit: publish these without reading them back."""
        # Past half its lease a row is left to the sweeper, so the two paths never publish the same row.
        deadline = asyncio.get_running_loop().time() + self._lease.total_seconds() / 2
        for sub in committed:
            self._queue.put_nowait((deadline, publication_for(sub)))

    def lease_until(self) -> datetime:
        return datetime.now(UTC) + self._lease

    async def _eager_loop(self) -> None:
        while True:
            queued = [await self._queue.get()]
            while len(queued) < self._batch_size and not self._queue.empty():
                queued.append(self._queue.get_nowait())
            now = asyncio.get_running_loop().time()
            batch = [pub for deadline, pub in queued if deadline > now]
            if not batch:
                continue
            try:
                await self._publish_then_mark(batch)
            except BrokerUnavailable as exc:
                # The rows stay leased to us until the lease runs out; then a sweeper (maybe ours) retries them.
                self.broker_healthy = False
                log.warning("broker unavailable; %d messages left to the sweeper: %s", len(batch), exc)
            except Exception:
                log.exception("eager publish failed; %d messages left to the sweeper", len(batch))

    async def _sweep_loop(self) -> None:
        if self._solo:
            await self._solo_sweep_loop()
            return
        failures = 0  # sweeps failed in a row
        unmarked: tuple[_Unmarked, ...] = ()  # published; its marks travel in the next claim's transaction
        while True:
            try:
                # A read first: an idle relay polls often (it is the only publisher when gateways leave publishing
                # to workers), and a claim is a write transaction that would queue behind intake for nothing.
                if not unmarked and not await self._anything_to_claim():
                    swept = 0
                else:
                    claimed = await self._mark_and_claim(unmarked)
                    unmarked = ()
                    swept = len(claimed)
                    if claimed:
                        published = await self._publish_claimed(claimed)
                        unmarked = () if published is None else (published,)
                failures = 0
            except asyncio.CancelledError:
                if unmarked:  # stopping: mark what went out, or the next sweeper publishes it again
                    await self._mark_and_claim(unmarked, claim=False)
                raise
            except BrokerUnavailable as exc:
                self.broker_healthy = False
                failures += 1
                log.warning("broker unavailable during sweep (%d in a row): %s", failures, exc)
                swept = 0
            except Exception:
                failures += 1
                log.exception("outbox sweep failed (%d in a row)", failures)
                swept = 0
            if failures:
                # Not every sweep interval (20 times a second by default): a database or broker that is away
                # would get a stream of attempts and the log a stream of tracebacks.
                await asyncio.sleep(min(SWEEP_FAILURE_PAUSE_MAX, self._sweep_interval * 2**failures))
            elif not swept:  # while there is work, the next batch has formed during this one's publish
                await asyncio.sleep(self._sweep_interval)

    async def _solo_sweep_loop(self) -> None:
        """Sweep a SQLite outbox while this process holds the sweeper's lease: read a batch, publish it, read
        the next; a marker task of its own marks what went out, every batch published since its last
        transaction in one more.

        Every writer on the machine queues for SQLite's one write lock; a claim per batch (the other loop) put
        that wait between each message's commit and its publication, and under load it was most of that time.
        Rows published and not yet marked are left out of the next reads. A crash before a mark re-publishes
        those rows (consumers deduplicate by message id), as with claims."""
        failures = 0
        lease = HeldLease(self._db, SWEEP_LEASE, self.owner, self._lease, look_first=True)
        marks = _Marks()
        marker = asyncio.create_task(self._mark_published_batches(marks), name="docbus-relay-marker")
        try:
            while True:
                swept = 0
                try:
                    batch = await self._unclaimed_records(marks.outbox_ids) if await lease.hold() else []
                    if batch:
                        await self._broker.ensure_topics(sorted({p.record.topic for p in batch}))
                        published = await self._broker.publish([p.record for p in batch])
                        marks.add(_Unmarked(batch, published, datetime.now(UTC)))
                        self.broker_healthy = True
                        swept = len(batch)
                    failures = 0
                except BrokerUnavailable as exc:
                    self.broker_healthy = False
                    failures += 1
                    log.warning("broker unavailable during sweep (%d in a row): %s", failures, exc)
                except Exception:
                    failures += 1
                    log.exception("outbox sweep failed (%d in a row)", failures)
                if failures:
                    await asyncio.sleep(min(SWEEP_FAILURE_PAUSE_MAX, self._sweep_interval * 2**failures))
                elif not swept:
                    await asyncio.sleep(self._sweep_interval)
                elif swept < SOLO_SWEEP_LINGER_BELOW:
                    # A trickle: let a few more commits gather, or every message costs a produce request and
                    # every few a write transaction of the marker's.
                    await asyncio.sleep(SOLO_SWEEP_LINGER_SECONDS)
        finally:
            marks.closing = True  # stopping: mark what went out, or the next sweeper publishes it again
            marks.wakeup.set()
            await asyncio.wait([marker])
            with contextlib.suppress(Exception):
                await lease.release()

    async def _unclaimed_records(self, leave_out: Collection[int]) -> list[PendingPublication]:
        async with self._db.reading() as conn:
            return await unclaimed_publications(conn, datetime.now(UTC), self._batch_size, leave_out)

    async def _mark_published_batches(self, marks: _Marks) -> None:
        """The solo sweeper's marker: whatever was published since its last transaction, in one more."""
        while True:
            await marks.wakeup.wait()
            marks.wakeup.clear()
            while marks.waiting:
                batches = marks.take()
                try:
                    await self._mark_and_claim(batches, claim=False)
                except Exception:
                    count = sum(len(b.batch) for b in batches)
                    log.exception("could not mark %d published outbox rows; they will be published again", count)
                finally:
                    marks.done(batches)
            if marks.closing:
                return

    async def _anything_to_claim(self) -> bool:
        async with self._db.reading() as conn:
            found = await conn.scalar(select(outbox.c.id).where(_claimable(datetime.now(UTC))).limit(1))
        return found is not None

    async def sweep_once(self) -> int:
        """Claim up to one batch of expired rows, publish them, mark them. Returns how many were published."""
        claimed = await self._mark_and_claim(())
        if claimed:
            await self._publish_then_mark(claimed)
        return len(claimed)

    async def _publish_then_mark(self, batch: list[PendingPublication]) -> None:
        """Publish a batch and mark it at once (the eager path, and a sweep with no next batch to wait for)."""
        unmarked = await self._publish_claimed(batch)
        if unmarked is not None:
            await self._mark_and_claim((unmarked,), claim=False)

    async def _publish_claimed(self, batch: list[PendingPublication]) -> _Unmarked | None:
        """Publish a batch; what still needs marking (None when the broker marked it in its own transaction).
        On failure the rows this relay claimed from the outbox are given back."""
        try:
            await self._broker.ensure_topics(sorted({p.record.topic for p in batch}))
            records = [p.record for p in batch]
            if isinstance(self._broker, EmbeddedBroker) and self._broker.shares_database(self._db):

                async def mark(conn: AsyncConnection, published: list[PublishedRecord]) -> None:
                    await mark_published(conn, batch, published, owner=self.owner)

                await self._broker.publish_then(records, mark)  # one transaction: exactly once, one commit
                self.published += len(batch)
                PUBLISHED.inc(len(batch))
                unmarked = None
            else:
                published = await self._broker.publish(records)
                unmarked = _Unmarked(batch, published, datetime.now(UTC))
        except Exception:
            claimed = [p.outbox_id for p in batch if p.outbox_id is not None]  # the eager path's rows have none
            if claimed:
                await self._release(claimed)
            raise
        self.broker_healthy = True
        return unmarked

    async def _release(self, outbox_ids: list[int]) -> None:
        """Give up the claim on rows a failed sweep could not publish, so that the next sweep (after its pause)
        tries them again instead of waiting for the lease to run out. Best effort: if the database is what
        failed, the lease runs out by itself."""
        try:
            async with self._db.transaction() as conn:
                await conn.execute(
                    update(outbox)
                    .where(
                        outbox.c.id.in_(outbox_ids), outbox.c.claimed_by == self.owner, outbox.c.published_at.is_(None)
                    )
                    .values(claimed_until=None)
                )
        except Exception as exc:
            log.warning("could not release %d claimed outbox rows (their lease will run out): %s", len(outbox_ids), exc)

    async def _mark_and_claim(self, unmarked: Sequence[_Unmarked], *, claim: bool = True) -> list[PendingPublication]:
        """One write transaction marks the batches published and claims the next: a sweeper under load takes the
        database's write lock once per batch, not twice, and every wait for that lock (behind the gateways'
        group commits) is a wait for every message in the batch. The solo sweeper's marker only marks."""
        tails = None
        if unmarked:
            # The timeline entries are built before the write lock is taken; if another writer extended one of
            # these timelines meanwhile, the insert collides on (message_id, seq) and they are built again inside.
            async with self._db.reading() as conn:
                tails = await read_tails(conn, [p.message_id for b in unmarked for p in b.batch])
        try:
            ids = await self._marked_and_claimed(unmarked, tails, claim)
        except IntegrityError:
            if tails is None:
                raise
            ids = await self._marked_and_claimed(unmarked, None, claim)
        marked = sum(len(b.batch) for b in unmarked)
        self.published += marked
        PUBLISHED.inc(marked)  # once the marks are committed
        return await self._claimed_records(ids) if ids else []

    async def _marked_and_claimed(
        self, unmarked: Sequence[_Unmarked], tails: dict[str, tuple[int, str]] | None, claim: bool
    ) -> list[int]:
        now = datetime.now(UTC)
        until = now + self._lease
        # The claim is all the write transaction reads: building records happens after, outside the write lock.
        async with self._db.transaction() as conn:
            for b in unmarked:
                await mark_published(
                    conn, b.batch, b.published, owner=self.owner, tails=tails, acknowledged_at=b.acknowledged_at
                )
            if not claim:
                return []
            candidates = select(outbox.c.id).where(_claimable(now)).order_by(outbox.c.id).limit(self._batch_size)
            if not self._db.is_sqlite:
                # Several relays sweep the same PostgreSQL: each row goes to exactly one of them.
                candidates = candidates.with_for_update(skip_locked=True)
            ids = [row.id for row in await conn.execute(candidates)]
            if ids:
                await conn.execute(
                    update(outbox).where(outbox.c.id.in_(ids)).values(claimed_by=self.owner, claimed_until=until)
                )
        return ids

    async def _claimed_records(self, ids: list[int]) -> list[PendingPublication]:
        async with self._db.reading() as conn:
            return await claimed_publications(conn, ids, self.owner)


# What a record carries: every column of the message but intake's bookkeeping (identity, status, signed receipt).
_RECORD_COLUMNS = tuple(c for c in MESSAGE_COLUMNS if c not in {"idempotency_key", "dedup_key", "status", "receipt"})
_CLAIMED_SQL = (
    f"SELECT o.id, o.topic, {', '.join(f'm.{name}' for name in _RECORD_COLUMNS)}, p.body FROM outbox o"  # noqa: S608 - column names
    " JOIN messages m ON m.id = o.message_id LEFT JOIN payloads p ON p.message_id = o.message_id"
    " WHERE o.id IN ({marks}) AND o.claimed_by = ? ORDER BY o.id"
)


_UNCLAIMED_SQL = (
    f"SELECT o.id, o.topic, {', '.join(f'm.{name}' for name in _RECORD_COLUMNS)}, p.body FROM outbox o"  # noqa: S608 - column names
    " JOIN messages m ON m.id = o.message_id LEFT JOIN payloads p ON p.message_id = o.message_id"
    " WHERE o.published_at IS NULL AND (o.claimed_until IS NULL OR o.claimed_until < ?){leave_out}"
    " ORDER BY o.id LIMIT ?"
)
_PUBLICATION_NAMES = ("outbox_id", "topic", *_RECORD_COLUMNS, "body")


async def claimed_publications(
    conn: AsyncConnection | InlineConnection, outbox_ids: list[int], owner: str
) -> list[PendingPublication]:
    """The records of outbox rows ``owner`` has claimed, in outbox order.

    On a SQLite file the rows come from plain SQL: a sweeping worker reads every message it publishes, and
    SQLAlchemy's row handling (a parsed timestamp per row) cost more than the read itself."""
    if isinstance(conn, InlineConnection):
        sql = _CLAIMED_SQL.format(marks=placeholders(outbox_ids))
        return _publications(_plain_rows(conn.driver_connection.execute(sql, (*outbox_ids, owner))))
    return _publications(
        await _publication_rows(conn, and_(outbox.c.id.in_(outbox_ids), outbox.c.claimed_by == owner), None)
    )


async def unclaimed_publications(
    conn: AsyncConnection | InlineConnection, now: datetime, limit: int, leave_out: Collection[int]
) -> list[PendingPublication]:
    """Up to ``limit`` records of unpublished outbox rows no relay holds, in outbox order, but ``leave_out``."""
    left_out = sorted(leave_out)
    if isinstance(conn, InlineConnection):
        excluded = f" AND o.id NOT IN ({placeholders(left_out)})" if left_out else ""
        sql = _UNCLAIMED_SQL.format(leave_out=excluded)
        values = (stored_datetime(now), *left_out, limit)
        return _publications(_plain_rows(conn.driver_connection.execute(sql, values)))
    where = _claimable(now)
    if left_out:
        where = and_(where, outbox.c.id.not_in(left_out))
    return _publications(await _publication_rows(conn, where, limit))


def _plain_rows(cursor: Iterable[tuple[Any, ...]]) -> list[dict[str, Any]]:
    rows = []
    for values in cursor:
        env = dict(zip(_PUBLICATION_NAMES, values, strict=True))
        env["received_at"] = datetime.fromisoformat(env["received_at"])  # naive UTC, as SQLAlchemy reads it
        rows.append(env)
    return rows


async def _publication_rows(
    conn: AsyncConnection | InlineConnection, where: ColumnElement[bool], limit: int | None
) -> list[dict[str, Any]]:
    query = (
        select(outbox.c.id, outbox.c.topic, *(messages.c[name] for name in _RECORD_COLUMNS), payloads.c.body)
        .join(messages, messages.c.id == outbox.c.message_id)
        .outerjoin(payloads, payloads.c.message_id == outbox.c.message_id)
        .where(where)
        .order_by(outbox.c.id)
    )
    if limit is not None:
        query = query.limit(limit)
    result = await conn.execute(query)
    return [dict(zip(_PUBLICATION_NAMES, values, strict=True)) for values in result]


def _publications(rows: list[dict[str, Any]]) -> list[PendingPublication]:
    claimed = []
    for env in rows:
        env["message_id"] = env["id"]
        env["receivers"] = orjson.loads(env["receivers"])
        record = OutgoingRecord(
            topic=env["topic"],
            key=partition_key(env["business_id"], env["response_for"]),
            value=record_value(env["body"], env),
            headers=record_headers(env),
        )
        claimed.append(PendingPublication(env["outbox_id"], env["id"], record))
    return claimed


def _claimable(now: datetime) -> ColumnElement[bool]:
    """Unpublished rows no relay holds: never leased, or their lease has run out."""
    return and_(
        outbox.c.published_at.is_(None),
        or_(outbox.c.claimed_until.is_(None), outbox.c.claimed_until < now),
    )


async def mark_published(
    conn: AsyncConnection,
    batch: Sequence[PendingPublication],
    published: Sequence[PublishedRecord],
    *,
    owner: str,
    tails: dict[str, tuple[int, str]] | None = None,
    acknowledged_at: datetime | None = None,
) -> None:
    """In one transaction: outbox rows published, a PUBLISHED event per message, status PUBLISHED.

    ``tails``: the timelines' last events, read before the transaction (see ``append_events_in``).
    ``acknowledged_at``: when the broker acknowledged the batch (the transaction's time when left out, as when
    the embedded broker publishes in this same transaction). A sweeper under load marks a batch only in the
    transaction that claims the next one, after that batch's consumers may have delivered it already; the
    PUBLISHED event and the outbox row keep the acknowledgement's time, and the row's ``recorded_at`` the write's."""
    now = acknowledged_at or datetime.now(UTC)
    ids = [p.message_id for p in batch]
    # Rows another relay already marked (it won a race after our lease expired) get no second event.
    if isinstance(conn, InlineConnection):  # a SQLite file: plain SQL, inside the write lock
        still_open = _mark_outbox_rows(conn.driver_connection, ids, owner, now)
    else:
        still_open = {
            r.message_id
            for r in await conn.execute(
                select(outbox.c.message_id).where(outbox.c.message_id.in_(ids), outbox.c.published_at.is_(None))
            )
        }
        await conn.execute(
            update(outbox)
            .where(outbox.c.message_id.in_(ids), outbox.c.published_at.is_(None))
            .values(published_at=now, claimed_by=owner)
        )
    await append_events_in(
        conn,
        [
            NewEvent(
                message_id=pending.message_id,
                type="PUBLISHED",
                actor=RELAY_ACTOR,
                detail={"topic": where.topic, "partition": where.partition, "offset": where.offset},
                at=now,
            )
            for pending, where in zip(batch, published, strict=True)
            if pending.message_id in still_open
        ],
        tails=tails,
    )
    if isinstance(conn, InlineConnection):
        opened = sorted(still_open)
        conn.driver_connection.execute(
            f"UPDATE messages SET status = 'PUBLISHED' WHERE id IN ({placeholders(opened)}) AND status = 'ACCEPTED'",  # noqa: S608
            opened,
        )
    else:
        await conn.execute(
            update(messages)
            .where(messages.c.id.in_(list(still_open)), messages.c.status == "ACCEPTED")
            .values(status=MessageStatus.PUBLISHED)
        )


def _mark_outbox_rows(raw: sqlite3.Connection, message_ids: list[str], owner: str, now: datetime) -> set[str]:
    """Mark the outbox rows of ``message_ids`` published; the ids whose rows were still unpublished."""
    marks = placeholders(message_ids)
    still_open = {
        row[0]
        for row in raw.execute(
            f"SELECT message_id FROM outbox WHERE message_id IN ({marks}) AND published_at IS NULL",  # noqa: S608
            message_ids,
        )
    }
    raw.execute(
        f"UPDATE outbox SET published_at = ?, claimed_by = ? WHERE message_id IN ({marks}) AND published_at IS NULL",  # noqa: S608
        (stored_datetime(now), owner, *message_ids),
    )
    return still_open
