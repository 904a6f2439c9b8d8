"""Reading accepted messages and their timelines, and appending lifecycle events to them.

Every state change after acceptance (PUBLISHED, FORWARDING, DELIVERED, receipts, ...) is appended here as an
event that extends the message's hash chain; the message row's ``status`` follows the newest event.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Callable, Collection, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any, TypeVar

import orjson
from sqlalchemy import Select, and_, insert, or_, select, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncConnection

from docbus.ids import first_id_at_or_after, last_id_before
from docbus.store import sqlite_intake
from docbus.store.audit import GENESIS, as_utc, event_hash, utc_iso
from docbus.store.database import Database, InlineConnection
from docbus.store.tables import events, messages, payloads

_Row = TypeVar("_Row")


@dataclass(frozen=True, slots=True)
class MessageRecord:
    id: str
    kind: str
    schema_id: str
    schema_version: str
    sender: str
    receivers: list[str]
    business_id: str
    sha256: str
    size: int
    content_type: str
    received_at: datetime
    idempotency_key: str | None
    trace_id: str
    status: str
    response_for: str | None
    status_code: str | None
    payload_ref: str | None
    payload_purged_at: datetime | None = None  # set when payload retention deleted the payload

    def visible_to(self, organ_id: str) -> bool:
        return organ_id == self.sender or organ_id in self.receivers

    def as_dict(self) -> dict[str, Any]:
        return {
            "message_id": self.id,
            "kind": self.kind,
            "schema": {"id": self.schema_id, "version": self.schema_version},
            "sender": self.sender,
            "receivers": self.receivers,
            "business_id": self.business_id,
            "sha256": self.sha256,
            "size": self.size,
            "content_type": self.content_type,
            "received_at": self.received_at.isoformat(),
            "idempotency_key": self.idempotency_key,
            "trace_id": self.trace_id,
            "status": self.status,
            "response_for": self.response_for,
            "status_code": self.status_code,
            "payload_purged_at": utc_iso(self.payload_purged_at) if self.payload_purged_at is not None else None,
        }


@dataclass(frozen=True, slots=True)
class Event:
    """One entry of a timeline: ``at`` is when it happened, ``recorded_at`` when it was written (later when a
    worker batches its writes, or waited for the database)."""

    seq: int
    type: str
    at: datetime
    recorded_at: datetime
    actor: str
    destination: str | None
    detail: dict[str, Any]
    prev_hash: str
    hash: str

    def as_dict(self) -> dict[str, Any]:
        return {
            "seq": self.seq,
            "type": self.type,
            "at": self.at.isoformat(),
            "recorded_at": self.recorded_at.isoformat(),
            "actor": self.actor,
            "destination": self.destination,
            "detail": self.detail,
            "hash": self.hash,
        }


_MESSAGE_COLUMNS = [c for c in messages.c if c.name not in ("receipt", "dedup_key")]


def _names_receiver(organ_id: str) -> Any:
    """Receivers are a JSON array: the quoted id cannot match a longer id that merely contains it. LIKE's
    wildcards in what a caller typed (``%``, ``_``) are escaped: they match themselves, not any text."""
    return messages.c.receivers.contains(f'"{organ_id}"', autoescape=True)


class MessageStore:
    """Queries over stored messages, and the one way to add an event to a message."""

    def __init__(self, db: Database) -> None:
        self._db = db

    async def get(self, message_id: str) -> MessageRecord | None:
        async with self._db.reader.connect() as conn:
            row = (await conn.execute(select(*_MESSAGE_COLUMNS).where(messages.c.id == message_id))).first()
        return _record(row._asdict()) if row is not None else None

    async def receipt(self, message_id: str) -> bytes | None:
        async with self._db.reader.connect() as conn:
            value = await conn.scalar(select(messages.c.receipt).where(messages.c.id == message_id))
        return bytes(value) if value is not None else None

    async def payload(self, message_id: str) -> bytes | None:
        async with self._db.reader.connect() as conn:
            value = await conn.scalar(select(payloads.c.body).where(payloads.c.message_id == message_id))
        return bytes(value) if value is not None else None

    async def with_timeline(self, message_id: str) -> tuple[MessageRecord, list[Event]] | None:
        """The message and its timeline from one snapshot, so the status shown is the last event shown."""
        async with self._db.reader.connect() as conn:
            if not self._db.is_sqlite:  # SQLite's read transaction is a snapshot already
                conn = await conn.execution_options(isolation_level="REPEATABLE READ")
            async with conn.begin():
                row = (await conn.execute(select(*_MESSAGE_COLUMNS).where(messages.c.id == message_id))).first()
                if row is None:
                    return None
                rows = await conn.execute(
                    select(events).where(events.c.message_id == message_id).order_by(events.c.seq)
                )
                return _record(row._asdict()), [_event(r._asdict()) for r in rows]

    async def timeline(self, message_id: str) -> list[Event]:
        async with self._db.reader.connect() as conn:
            rows = await conn.execute(select(events).where(events.c.message_id == message_id).order_by(events.c.seq))
            return [_event(r._asdict()) for r in rows]

    async def search(
        self,
        *,
        visible_to: str | None,
        sender: str | None = None,
        business_id: str | None = None,
        status: str | None = None,
        kind: str | None = None,
        receiver: str | None = None,
        since: datetime | None = None,
        until: datetime | None = None,
        before: str | None = None,
        limit: int = 50,
    ) -> list[MessageRecord]:
        """Newest first; ``before`` is a message id to page from (ids sort by arrival time). ``since`` and
        ``until`` bound the arrival time (``since`` included, ``until`` not) as a range of message ids, so they
        narrow the primary key's range instead of filtering rows."""
        query = select(*_MESSAGE_COLUMNS)
        conditions = []
        if visible_to is not None:
            conditions.append(or_(messages.c.sender == visible_to, _names_receiver(visible_to)))
        if receiver:
            conditions.append(_names_receiver(receiver))
        if since is not None:
            conditions.append(messages.c.id >= first_id_at_or_after(since))
        if until is not None:
            conditions.append(messages.c.id <= last_id_before(until))
        if sender:
            conditions.append(messages.c.sender == sender)
        if business_id:
            conditions.append(messages.c.business_id == business_id)
        if status:
            conditions.append(messages.c.status == status)
        if kind:
            conditions.append(messages.c.kind == kind)
        if before:
            conditions.append(messages.c.id < before)
        if conditions:
            query = query.where(and_(*conditions))
        query = query.order_by(messages.c.id.desc()).limit(min(max(limit, 1), 500))
        async with self._db.reader.connect() as conn:
            rows = await conn.execute(query)
            return [_record(r._asdict()) for r in rows]

    async def was_sent_to(self, business_id: str | None, sender: str | None, receiver: str) -> bool:
        """Whether ``sender`` sent a document with ``business_id`` to ``receiver`` through this bus."""
        if not business_id or not sender:
            return False
        async with self._db.reader.connect() as conn:
            rows = await conn.execute(
                select(messages.c.receivers).where(
                    messages.c.business_id == business_id, messages.c.sender == sender, messages.c.kind == "edoc"
                )
            )
            return any(receiver in orjson.loads(r.receivers) for r in rows)

    async def append_events(self, items: Sequence[NewEvent]) -> None:
        """Append events in one transaction; retried when a concurrent writer extended the same chain."""
        for _attempt in range(5):
            try:
                async with self._db.transaction() as conn:
                    await append_events_in(conn, items)
                return
            except IntegrityError as exc:
                last = exc  # another writer took one of these seqs; read the new tails and try again
        raise RuntimeError(f"could not append events: {last.orig}") from last

    async def append_event(
        self,
        message_id: str,
        type: str,
        *,
        actor: str,
        destination: str | None = None,
        detail: dict[str, Any] | None = None,
        status: str | None = None,
    ) -> None:
        """Append one event and, when ``status`` is given, set the message's status."""
        await self.append_events([NewEvent(message_id, type, actor, destination, detail, status)])


@dataclass(frozen=True, slots=True)
class NewEvent:
    """An event to append; ``status`` (when set) becomes the message's status. ``at`` is when it happened (the
    write time when left out); the row's ``recorded_at`` is always its write time."""

    message_id: str
    type: str
    actor: str
    destination: str | None = None
    detail: dict[str, Any] | None = None
    status: str | None = None
    at: datetime | None = None


async def append_events_in(
    conn: AsyncConnection, items: Sequence[NewEvent], *, tails: dict[str, tuple[int, str]] | None = None
) -> None:
    """Append many events (several per message allowed, in order) with one read of the chain tails.

    ``tails`` read earlier (``read_tails``, outside the transaction) save that read; if a chain has grown since,
    the insert collides with the (message_id, seq) constraint and raises ``IntegrityError``, and the caller
    appends again without them."""
    if not items:
        return
    if tails is None:
        tails = await read_tails(conn, {item.message_id for item in items})
    rows, statuses = chained_event_rows(items, tails)
    await insert_event_rows(conn, rows, statuses)


async def read_tails(conn: AsyncConnection, message_ids: Collection[str]) -> dict[str, tuple[int, str]]:
    """Each message's last event: its seq and hash (messages without events are absent).

    One probe of the (message_id, seq) index per message; a timeline holds a handful of events, so reading them
    all is cheaper than asking the database for the maximum first (a row-value ``IN`` that SQLite answers with a
    scan of the whole table)."""
    tails: dict[str, tuple[int, str]] = {}
    ids = sorted(message_ids)
    rows: Any
    if isinstance(conn, InlineConnection):  # a SQLite file: plain SQL on the driver connection
        sql = f"SELECT message_id, seq, hash FROM events WHERE message_id IN ({sqlite_intake.placeholders(ids)})"  # noqa: S608
        rows = conn.driver_connection.execute(sql, ids) if ids else ()
    else:
        rows = await conn.execute(
            select(events.c.message_id, events.c.seq, events.c.hash).where(events.c.message_id.in_(ids))
        )
    for message_id, seq, digest in rows:
        known = tails.get(message_id)
        if known is None or int(seq) > known[0]:
            tails[message_id] = (int(seq), digest)
    return tails


def chained_event_rows(
    items: Sequence[NewEvent], tails: dict[str, tuple[int, str]]
) -> tuple[list[dict[str, Any]], dict[str, str]]:
    """The rows that extend each chain from ``tails`` (left as they were), and the statuses they set."""
    tails = dict(tails)
    rows = []
    statuses: dict[str, str] = {}
    now = datetime.now(UTC)  # callers build rows inside the write transaction: this is the write time
    for item in items:
        seq, prev = tails.get(item.message_id, (0, GENESIS))
        seq += 1
        at = item.at or now
        detail = item.detail or {}
        digest = event_hash(
            prev,
            message_id=item.message_id,
            seq=seq,
            type=item.type,
            at=at,
            actor=item.actor,
            destination=item.destination,
            detail=detail,
        )
        rows.append(
            {
                "message_id": item.message_id,
                "seq": seq,
                "type": item.type,
                "at": at,
                "recorded_at": now,
                "actor": item.actor,
                "destination": item.destination,
                "detail": orjson.dumps(detail, option=orjson.OPT_SORT_KEYS).decode(),
                "prev_hash": prev,
                "hash": digest,
            }
        )
        tails[item.message_id] = (seq, digest)
        if item.status is not None:
            statuses[item.message_id] = item.status
    return rows, statuses


async def insert_event_rows(conn: AsyncConnection, rows: list[dict[str, Any]], statuses: dict[str, str]) -> None:
    if isinstance(conn, InlineConnection):
        # A SQLite file: prebuilt SQL with executemany, as intake does (``sqlite_intake``); timeline events are
        # the store's most frequent write after intake (two or three per delivery).
        raw = conn.driver_connection
        try:
            sqlite_intake.insert_rows(raw, {"events": rows})
        except sqlite3.IntegrityError as exc:  # callers retry on SQLAlchemy's, whichever path wrote
            raise IntegrityError("INSERT INTO events", None, exc) from exc
        raw.executemany("UPDATE messages SET status = ? WHERE id = ?", [(st, mid) for mid, st in statuses.items()])
        return
    if rows:
        await conn.execute(insert(events), rows)
    by_status: dict[str, list[str]] = {}
    for message_id, status in statuses.items():
        by_status.setdefault(status, []).append(message_id)
    for status, message_ids in by_status.items():
        await conn.execute(update(messages).where(messages.c.id.in_(message_ids)).values(status=status))


def events_after(position: int) -> Select[Any]:
    """Events after ``position`` in id order, with the facts of their message that a subscriber filters on."""
    return (
        select(events, messages.c.sender, messages.c.receivers, messages.c.business_id, messages.c.kind)
        .join(messages, messages.c.id == events.c.message_id)
        .where(events.c.id > position)
        .order_by(events.c.id)
    )


@dataclass(frozen=True, slots=True)
class StreamedEvent:
    """An event on its way to the status topic: what the stream orders and settles on, and the JSON it sends."""

    id: int
    message_id: str
    type: str
    recorded_at: datetime
    value: bytes


_EVENTS_AFTER_SQL = (
    "SELECT e.id, e.message_id, m.business_id, m.kind, m.sender, e.seq, e.type, e.at, e.recorded_at, e.actor,"
    " e.destination,"
    " e.detail, e.hash FROM events e JOIN messages m ON m.id = e.message_id WHERE e.id > ? ORDER BY e.id LIMIT ?"
)


async def streamed_events_after(
    conn: AsyncConnection | InlineConnection, position: int, limit: int
) -> list[StreamedEvent]:
    """Up to ``limit`` events after ``position``, in id order, each with the JSON of :func:`published_event`.

    On a SQLite file the rows come from plain SQL and the stored detail goes into the JSON as it is (an
    ``orjson.Fragment``), not parsed and dumped again: the status stream sends every event of every message, and
    this is most of its work."""
    if not isinstance(conn, InlineConnection):
        rows = (await conn.execute(events_after(position).limit(limit))).all()
        return [
            StreamedEvent(r.id, r.message_id, r.type, as_utc(r.recorded_at), orjson.dumps(published_event(r)))
            for r in rows
        ]
    streamed = []
    for (
        id_,
        message_id,
        business_id,
        kind,
        sender,
        seq,
        type_,
        at,
        recorded_at,
        actor,
        destination,
        detail,
        hash_,
    ) in conn.driver_connection.execute(_EVENTS_AFTER_SQL, (position, limit)):
        written = datetime.fromisoformat(recorded_at).replace(tzinfo=UTC)  # SQLite keeps UTC without an offset
        value = {
            "event_id": id_,
            "message_id": message_id,
            "business_id": business_id,
            "kind": kind,
            "sender": sender,
            "seq": seq,
            "type": type_,
            "at": datetime.fromisoformat(at).replace(tzinfo=UTC).isoformat(),
            "recorded_at": written.isoformat(),
            "actor": actor,
            "destination": destination,
            "detail": orjson.Fragment(detail),
            "hash": hash_,
        }
        streamed.append(StreamedEvent(id_, message_id, type_, written, orjson.dumps(value)))
    return streamed


# Longer than any transaction docbus keeps open: see ``settled_prefix``.
EVENT_SETTLE = timedelta(seconds=2)


def settled_prefix(rows: Sequence[_Row], written: Callable[[_Row], datetime], cutoff: datetime) -> Sequence[_Row]:
    """The leading rows (in id order) written before ``cutoff``, up to the first one written after it.

    PostgreSQL hands out ids before commit, so a reader tailing the events table by id can see an event before an
    earlier id commits, and would never go back for that one. Every id is written (``recorded_at``) just before
    its insert, in a transaction that ends within ``EVENT_SETTLE``: once the rows read were written longer ago than
    that, every lower id is committed or gone. SQLite has one writer at a time, so there ids commit in order."""
    for index, row in enumerate(rows):
        if written(row) >= cutoff:
            return rows[:index]
    return rows


def published_event(row: Any) -> dict[str, Any]:
    """One row of :func:`events_after` as subscribers see it (the event stream and the status topic)."""
    return {
        "event_id": row.id,
        "message_id": row.message_id,
        "business_id": row.business_id,
        "kind": row.kind,
        "sender": row.sender,
        "seq": row.seq,
        "type": row.type,
        "at": utc_iso(row.at),
        "recorded_at": utc_iso(row.recorded_at),
        "actor": row.actor,
        "destination": row.destination,
        "detail": orjson.loads(row.detail),
        "hash": row.hash,
    }


def _record(row: dict[str, Any]) -> MessageRecord:
    return MessageRecord(
        id=row["id"],
        kind=row["kind"],
        schema_id=row["schema_id"],
        schema_version=row["schema_version"],
        sender=row["sender"],
        receivers=list(orjson.loads(row["receivers"])),
        business_id=row["business_id"],
        sha256=row["sha256"],
        size=int(row["size"]),
        content_type=row["content_type"],
        received_at=as_utc(row["received_at"]),
        idempotency_key=row["idempotency_key"],
        trace_id=row["trace_id"],
        status=row["status"],
        response_for=row["response_for"],
        status_code=row["status_code"],
        payload_ref=row["payload_ref"],
        payload_purged_at=as_utc(row["payload_purged_at"]) if row.get("payload_purged_at") is not None else None,
    )


def _event(row: dict[str, Any]) -> Event:
    return Event(
        seq=int(row["seq"]),
        type=row["type"],
        at=as_utc(row["at"]),
        recorded_at=as_utc(row["recorded_at"]),
        actor=row["actor"],
        destination=row["destination"],
        detail=orjson.loads(row["detail"]),
        prev_hash=row["prev_hash"],
        hash=row["hash"],
    )
