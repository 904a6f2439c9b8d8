"""Dead letters: messages a destination gave up on, with the whole story of their attempts.

Each dead letter is a row (for ``docbus dlq`` and ``/v1/dead-letters``) and a record in ``docbus.dlq.<destination>``
(for anything that watches Kafka). A resend puts the message back on ``docbus.resend.<destination>``, which that
destination's consumer reads beside the agency topics; the message keeps its id and its timeline.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import orjson
from sqlalchemy import insert, select, update

from docbus.broker.base import Broker, OutgoingRecord
from docbus.envelope import MessageStatus
from docbus.errors import NotFound, PayloadGone, ValidationFailed
from docbus.records import partition_key, record_headers, record_value
from docbus.store.database import Database
from docbus.store.messages import NewEvent, append_events_in
from docbus.store.tables import dead_letters, messages, payloads
from docbus.topics import Topics


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
        async with self._db.reader.connect() as conn:
            row = (
                await conn.execute(
                    select(messages, payloads.c.body)
                    .outerjoin(payloads, payloads.c.message_id == messages.c.id)
                    .where(messages.c.id == letter.message_id)
                )
            ).first()
        if row is None:
            raise NotFound(f"message {letter.message_id} of dead letter {dead_id} is gone")
        env = row._asdict()
        if env.get("payload_purged_at") is not None:  # not while a dead letter waits; kept as a second line
            raise PayloadGone(f"the payload of {letter.message_id} was deleted by payload retention")
        env["message_id"] = env["id"]
        env["receivers"] = orjson.loads(env["receivers"])
        topic = self._topics.resend(letter.destination)
        record = OutgoingRecord(
            topic,
            partition_key(env["business_id"], env["response_for"]),
            record_value(env["body"], env),
            (*record_headers(env), ("resend-of", str(dead_id).encode())),
        )
        # Publish first: a crash before the mark below leaves the letter looking unsent, and resending it again
        # is harmless (the destination deduplicates by message id); the reverse order could lose the resend.
        await self._broker.ensure_topics([topic])
        await self._broker.publish([record])
        now = datetime.now(UTC)
        async with self._db.transaction() as conn:
            await conn.execute(
                update(dead_letters).where(dead_letters.c.id == dead_id).values(resent_at=now, resent_by=actor)
            )
            await append_events_in(
                conn,
                [
                    NewEvent(
                        letter.message_id,
                        "RESENT",
                        actor=actor,
                        destination=letter.destination,
                        detail={"dead_letter_id": dead_id},
                        status=MessageStatus.RESENT,
                        at=now,
                    )
                ],
            )
        return await self.get(dead_id)


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
