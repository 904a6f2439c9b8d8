"""Dead letters: messages a destination gave up on, with the whole story of their attempts.

Each dead letter is a row (for ``docbus dlq`` and ``/v1/dead-letters``) and a record in ``docbus.dlq.<destination>``
(for anything that watches Kafka). A resend puts the message back on ``docbus.resend.<destination>``, which that
destination's consumer reads beside the agency topics; the message keeps its id and its timeline.

After an outage that outlasted the retry policy, a destination can have thousands of dead letters: a bulk resend
(:meth:`DeadLetterStore.resend_waiting`) puts back every one still waiting, oldest first, in batches (one publish
and one transaction each). One bulk resend per destination runs at a time (a lease on a ``stream_cursors`` row),
and a single resend of that destination waits for it to end, because a resend is delivered even where an
earlier copy got through: two operators resending the same letters at once would deliver them twice.
"""

from __future__ import annotations

import hashlib
import uuid
from collections.abc import Collection, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

import orjson
from sqlalchemy import Row, func, insert, select, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncConnection

from docbus.broker.base import Broker, OutgoingRecord
from docbus.envelope import MessageStatus
from docbus.errors import Conflict, FieldError, NotFound, PayloadGone, ValidationFailed
from docbus.records import partition_key, record_headers, record_value
from docbus.store.database import Database
from docbus.store.leases import HeldLease, held_by_another
from docbus.store.messages import NewEvent, append_events_in
from docbus.store.tables import dead_letters, messages, payloads
from docbus.topics import Topics

MARK_ATTEMPTS = 5
RESEND_BATCH = 100  # dead letters per publish and per transaction in a bulk resend
RESEND_LEASE = timedelta(seconds=60)  # renewed as batches go; a bulk resend that dies frees it by running out


@dataclass(frozen=True, slots=True)
class DeadLetter:
    id: int
    message_id: str
    destination: str
    receivers: list[str]
    reason: str
    attempts: list[dict[str, Any]]
    created_at: datetime
    resent_at: datetime | None
    resent_by: str | None

    def as_dict(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "message_id": self.message_id,
            "destination": self.destination,
            "receivers": self.receivers,
            "reason": self.reason,
            "attempts": self.attempts,
            "created_at": self.created_at.isoformat(),
            "resent_at": self.resent_at.isoformat() if self.resent_at else None,
            "resent_by": self.resent_by,
        }


@dataclass(slots=True)
class BulkResend:
    """What a bulk resend did (or, on a dry run, would do) for one destination."""

    destination: str
    dry_run: bool
    resent: list[int] = field(default_factory=list)  # dead letter ids put back, oldest first
    refused: list[dict[str, Any]] = field(default_factory=list)  # {"id", "message_id", "reason"}: left waiting
    remaining: int = 0  # still waiting afterwards: refused, past the limit, or dead meanwhile

    def as_dict(self) -> dict[str, Any]:
        return {
            "destination": self.destination,
            "dry_run": self.dry_run,
            "resent": len(self.resent),
            "dead_letter_ids": self.resent,
            "refused": self.refused,
            "remaining": self.remaining,
        }


class DeadLetterStore:
    def __init__(self, db: Database, broker: Broker, topics: Topics) -> None:
        self._db = db
        self._broker = broker
        self._topics = topics

    async def add(
        self,
        *,
        message_id: str,
        destination: str,
        receivers: tuple[str, ...],
        reason: str,
        attempts: list[dict[str, Any]],
        record: OutgoingRecord,
    ) -> int:
        """Store the dead letter, mark the message DEAD for this destination, and publish it to the DLQ topic."""
        now = datetime.now(UTC)
        async with self._db.transaction() as conn:
            result = await conn.execute(
                insert(dead_letters)
                .values(
                    message_id=message_id,
                    destination=destination,
                    receivers=orjson.dumps(list(receivers)).decode(),
                    reason=reason,
                    attempts=orjson.dumps(attempts).decode(),
                    created_at=now,
                )
                .returning(dead_letters.c.id)
            )
            dead_id = int(result.scalar_one())
            await append_events_in(
                conn,
                [
                    NewEvent(
                        message_id,
                        "DEAD",
                        actor=destination,
                        destination=destination,
                        detail={"dead_letter_id": dead_id, "reason": reason, "attempts": len(attempts)},
                        status=MessageStatus.DEAD,
                        at=now,
                    )
                ],
            )
        error_headers = (
            ("dead-letter-id", str(dead_id).encode()),
            ("dead-reason", reason[:1000].encode("utf-8")),
            ("dead-attempts", orjson.dumps(attempts)[:8000]),
        )
        dlq = self._topics.dlq(destination)
        await self._broker.ensure_topics([dlq])
        await self._broker.publish(
            [OutgoingRecord(dlq, record.key, record.value, tuple(record.headers) + error_headers)]
        )
        return dead_id

    async def list(self, *, destination: str | None = None, limit: int = 100) -> list[DeadLetter]:
        query = select(dead_letters).order_by(dead_letters.c.id.desc()).limit(limit)
        if destination:
            query = query.where(dead_letters.c.destination == destination)
        async with self._db.reader.connect() as conn:
            return [_dead_letter(r._asdict()) for r in await conn.execute(query)]

    async def get(self, dead_id: int) -> DeadLetter:
        async with self._db.reader.connect() as conn:
            row = (await conn.execute(select(dead_letters).where(dead_letters.c.id == dead_id))).first()
        if row is None:
            raise NotFound(f"no dead letter {dead_id}")
        return _dead_letter(row._asdict())

    async def resend(self, dead_id: int, *, actor: str) -> DeadLetter:
        """Put the message back in front of its destination; it keeps its id and its history."""
        letter = await self.get(dead_id)
        if letter.resent_at is not None:
            raise ValidationFailed(f"dead letter {dead_id} was already resent at {letter.resent_at.isoformat()}")
        if await held_by_another(self._db, resend_lease(letter.destination), "", datetime.now(UTC)):
            raise Conflict(f"a bulk resend of {letter.destination} is running; try again when it ends")
        async with self._db.reader.connect() as conn:
            row = (await conn.execute(_letters_with_payloads().where(dead_letters.c.id == dead_id))).first()
        assert row is not None
        refusal = _refusal(row)
        if refusal is not None:
            raise refusal
        # Publish first: a crash before the mark below leaves the letter looking unsent, and resending it again
        # is harmless (the destination deduplicates by message id); the reverse order could lose the resend.
        await self._publish(letter.destination, [_resend_record(self._topics.resend(letter.destination), row)])
        await self._mark_resent([(dead_id, letter.message_id)], letter.destination, actor)
        return await self.get(dead_id)

    async def resend_waiting(
        self,
        destination: str,
        *,
        actor: str,
        limit: int | None = None,
        dry_run: bool = False,
        batch: int = RESEND_BATCH,
    ) -> BulkResend:
        """Put back every dead letter of ``destination`` still waiting (at most ``limit``), oldest first.

        A letter whose payload is gone (payload retention, a second line: a waiting letter keeps its payload) is
        refused and stays waiting; the others go on. Two waiting letters of one message put it back once. Each
        batch is published before it is marked, so a crash half-way leaves the unmarked rest waiting, never a
        letter marked and not sent. ``Conflict`` while another bulk resend of the destination runs."""
        if batch < 1 or (limit is not None and limit < 1):
            raise ValueError("batch and limit must be at least 1")
        outcome = BulkResend(destination, dry_run)
        lease = HeldLease(self._db, resend_lease(destination), f"{actor}:{uuid.uuid4().hex[:12]}", RESEND_LEASE)
        if not dry_run and await lease.take() is None:
            raise Conflict(f"a bulk resend of {destination} is already running; try again when it ends")
        try:
            after, seen = 0, set[str]()
            topic = self._topics.resend(destination)
            while limit is None or len(outcome.resent) < limit:
                size = batch if limit is None else min(batch, limit - len(outcome.resent))
                rows = await self._waiting_after(destination, after, size)
                if not rows:
                    break
                after = rows[-1].dead_id
                going: list[tuple[int, str]] = []
                records: list[OutgoingRecord] = []
                for row in rows:
                    refusal = _refusal(row)
                    if refusal is not None:
                        outcome.refused.append(
                            {"id": row.dead_id, "message_id": row.message_id, "reason": refusal.detail}
                        )
                        continue
                    going.append((row.dead_id, row.message_id))
                    if row.message_id not in seen:
                        seen.add(row.message_id)
                        records.append(_resend_record(topic, row))
                if dry_run or not going:
                    outcome.resent.extend(dead_id for dead_id, _ in going)
                    continue
                if not await lease.hold():
                    raise Conflict(f"the lease on resending {destination} was lost; what was marked is resent")
                await self._publish(destination, records)
                marked = await self._mark_resent(going, destination, actor)
                outcome.resent.extend(dead_id for dead_id, _ in going if dead_id in marked)
            outcome.remaining = await self.waiting(destination) - (len(outcome.resent) if dry_run else 0)
        finally:
            await lease.release()
        return outcome

    async def _waiting_after(self, destination: str, after: int, limit: int) -> Sequence[Row[Any]]:
        """The next ``limit`` waiting letters of ``destination`` after id ``after``, with their messages."""
        async with self._db.reader.connect() as conn:
            result = await conn.execute(
                _letters_with_payloads()
                .where(
                    dead_letters.c.destination == destination,
                    dead_letters.c.resent_at.is_(None),
                    dead_letters.c.id > after,
                )
                .order_by(dead_letters.c.id)
                .limit(limit)
            )
            return result.all()

    async def waiting(self, destination: str) -> int:
        """How many dead letters of ``destination`` wait for a resend."""
        async with self._db.reader.connect() as conn:
            count = await conn.scalar(
                select(func.count())
                .select_from(dead_letters)
                .where(dead_letters.c.destination == destination, dead_letters.c.resent_at.is_(None))
            )
        return int(count or 0)

    async def _mark_resent(self, letters: Sequence[tuple[int, str]], destination: str, actor: str) -> set[int]:
        """:func:`_mark_resent` in a transaction of its own, tried again when a writer of another destination
        extended one of the messages' event chains meanwhile (what was published must not stay unmarked)."""
        attempts = 1
        while True:
            try:
                async with self._db.transaction() as conn:
                    return await _mark_resent(conn, letters, destination, actor)
            except IntegrityError:
                if attempts == MARK_ATTEMPTS:
                    raise
                attempts += 1

    async def _publish(self, destination: str, records: Sequence[OutgoingRecord]) -> None:
        if records:
            await self._broker.ensure_topics([self._topics.resend(destination)])
            await self._broker.publish(records)


def check_destination(destination: str, configured: Collection[str]) -> None:
    """A bulk resend names a destination the routes configure: letters put back for any other name would wait
    on a resend topic nobody reads."""
    if destination not in configured:
        known = ", ".join(sorted(configured)) or "none"
        raise ValidationFailed(
            f"no destination {destination!r} is configured here (configured: {known})",
            [
                FieldError(
                    path="destination",
                    rule="unknown-destination",
                    message_en=f"No destination {destination} is configured; configured: {known}",
                    message_vi=f"Không có đích chuyển tiếp {destination}; các đích đã cấu hình: {known}",
                    expected=known,
                )
            ],
        )


def resend_lease(destination: str) -> str:
    """The ``stream_cursors`` row that one bulk resend of ``destination`` holds (names fit its 64 characters)."""
    name = f"resend:{destination}"
    return name if len(name) <= 64 else "resend:" + hashlib.sha256(destination.encode()).hexdigest()[:32]


def _letters_with_payloads() -> Any:
    """Dead letters with their message's columns and payload (outer joins: a message may be gone)."""
    return (
        select(
            dead_letters.c.id.label("dead_id"),
            dead_letters.c.message_id,
            messages.c.id.label("stored_id"),
            *(c for c in messages.c if c.name not in ("id", "receipt")),
            payloads.c.body,
        )
        .select_from(dead_letters)
        .outerjoin(messages, messages.c.id == dead_letters.c.message_id)
        .outerjoin(payloads, payloads.c.message_id == dead_letters.c.message_id)
    )


def _refusal(row: Row[Any]) -> NotFound | PayloadGone | None:
    """Why this letter's message cannot be put back, if it cannot."""
    if row.stored_id is None:
        return NotFound(f"message {row.message_id} of dead letter {row.dead_id} is gone")
    if row.payload_purged_at is not None:  # not while a dead letter waits; kept as a second line
        return PayloadGone(f"the payload of {row.message_id} was deleted by payload retention")
    if row.body is None and row.payload_ref is None:
        return NotFound(f"the payload of {row.message_id} is not in the database")
    return None


def _resend_record(topic: str, row: Row[Any]) -> OutgoingRecord:
    env = row._asdict()
    env["receivers"] = orjson.loads(env["receivers"])
    return OutgoingRecord(
        topic,
        partition_key(env["business_id"], env["response_for"]),
        record_value(env["body"], env),
        (*record_headers(env), ("resend-of", str(row.dead_id).encode())),
    )


async def _mark_resent(
    conn: AsyncConnection, letters: Sequence[tuple[int, str]], destination: str, actor: str
) -> set[int]:
    """Mark the letters resent and put RESENT on their timelines; returns the ids this call marked (a letter
    another resend marked meanwhile gets no second event)."""
    now = datetime.now(UTC)
    marked = {
        int(dead_id)
        for (dead_id,) in await conn.execute(
            update(dead_letters)
            .where(dead_letters.c.id.in_([dead_id for dead_id, _ in letters]), dead_letters.c.resent_at.is_(None))
            .values(resent_at=now, resent_by=actor)
            .returning(dead_letters.c.id)
        )
    }
    await append_events_in(
        conn,
        [
            NewEvent(
                message_id,
                "RESENT",
                actor=actor,
                destination=destination,
                detail={"dead_letter_id": dead_id},
                status=MessageStatus.RESENT,
                at=now,
            )
            for dead_id, message_id in letters
            if dead_id in marked
        ],
    )
    return marked


def _dead_letter(row: dict[str, Any]) -> DeadLetter:
    def aware(value: Any) -> datetime | None:
        if value is None:
            return None
        assert isinstance(value, datetime)
        return value if value.tzinfo else value.replace(tzinfo=UTC)

    created = aware(row["created_at"])
    assert created is not None
    return DeadLetter(
        id=int(row["id"]),
        message_id=row["message_id"],
        destination=row["destination"],
        receivers=orjson.loads(row["receivers"]),
        reason=row["reason"],
        attempts=orjson.loads(row["attempts"]),
        created_at=created,
        resent_at=aware(row["resent_at"]),
        resent_by=row["resent_by"],
    )
