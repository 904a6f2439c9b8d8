"""One destination's consumer: reads the agency topics, delivers what routes to it, retries, dead-letters.

Each destination has its own consumer group (``docbus.deliver.<destination>``), retry policy and circuit breaker,
so a destination that is down or slow never delays another. Within a destination, records with different keys
(business ids) are delivered concurrently and records with the same key in order, so one document's messages
arrive in the order they were accepted. Offsets are committed only after every record of a batch is delivered or
dead-lettered and its events are stored: a crash re-delivers, and the destination deduplicates by message id.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import select

from docbus.adapters.base import Adapter, DeliveryError, Outbound, RetriableDeliveryError
from docbus.broker.base import Broker, ConsumedRecord, OutgoingRecord
from docbus.delivery.consuming import consume_until
from docbus.delivery.dead_letters import DeadLetterStore
from docbus.delivery.policy import CircuitBreaker, RetryPolicy
from docbus.delivery.recorder import EventRecorder, EventsNotStored
from docbus.envelope import Envelope
from docbus.payload_store import PayloadStore
from docbus.records import envelope_from_record
from docbus.routing import RouteTable
from docbus.store.database import Database
from docbus.store.messages import NewEvent
from docbus.store.tables import events, messages
from docbus.topics import Topics

log = logging.getLogger(__name__)


class DestinationWorker:
    def __init__(
        self,
        name: str,
        adapter: Adapter,
        *,
        broker: Broker,
        db: Database,
        routes: RouteTable,
        local_agencies: Callable[[], frozenset[str]],
        recorder: EventRecorder,
        dead_letters: DeadLetterStore,
        payload_store: PayloadStore,
        topics: Topics,
        policy: RetryPolicy | None = None,
        breaker: CircuitBreaker | None = None,
        concurrency: int = 32,
    ) -> None:
        self.name = name
        self.adapter = adapter
        self._broker = broker
        self._db = db
        self._routes = routes
        self._local_agencies = local_agencies
        self._recorder = recorder
        self._dead_letters = dead_letters
        self._payload_store = payload_store
        self.policy = policy or RetryPolicy()
        self.breaker = breaker or CircuitBreaker()
        self._concurrency = asyncio.Semaphore(concurrency)
        self._topics = topics
        self.group = topics.deliver_group(name)
        self.delivered = 0
        self.duplicates_skipped = 0
        # Delivered by this worker and maybe not yet visible in the database (events are written in batches).
        self._recently_delivered: dict[str, None] = {}
        self.dead = 0

    async def run(self, stop: asyncio.Event) -> None:
        resend = self._topics.resend(self.name)
        await self._broker.ensure_topics([resend])
        consumer = self._broker.consumer(self.group, topics=[resend], pattern=self._topics.agency_pattern)
        await consume_until(stop, consumer, self._process_and_record, label=self.group)

    async def _process_and_record(self, records: list[ConsumedRecord]) -> None:
        mark = self._recorder.mark()
        await self.process(records)
        try:
            await self._recorder.flush(since=mark)  # events are stored before the offsets move past them
        except EventsNotStored:
            # Their DELIVERED events may be among the lost: when the batch comes again, the database decides.
            self._recently_delivered.clear()
            raise

    async def process(self, records: list[ConsumedRecord]) -> None:
        """Deliver a polled batch: keys concurrently, each key's records in order."""
        delivered, known = await self._lookup(records)
        # An operator's resend is delivered even if an earlier attempt got through.
        already = delivered - self._resent_ids(records)
        by_key: dict[bytes | None, list[ConsumedRecord]] = {}
        seen: set[str] = set()
        for record in records:
            headers = dict(record.headers)
            message_id = headers.get("message-id", b"").decode()
            resend = "resend-of" in headers
            # The relay may have published a message twice (at-least-once); deliver it once.
            if message_id in seen or (message_id in self._recently_delivered and not resend):
                self.duplicates_skipped += 1
                continue
            seen.add(message_id)
            by_key.setdefault(record.key, []).append(record)

        async def run_key(batch: list[ConsumedRecord]) -> None:
            for record in batch:
                async with self._concurrency:
                    await self.handle(record, already, known)

        await asyncio.gather(*(run_key(batch) for batch in by_key.values()))

    async def _lookup(self, records: list[ConsumedRecord]) -> tuple[set[str], set[str]]:
        """(message ids this destination already delivered, message ids this bus knows).

        A record re-read after a crash, or published twice by the relay, is not sent twice; a record whose
        message is not in this bus' database (another bus sharing the topic prefix) is skipped, not guessed at.
        """
        ids = {v.decode() for r in records for k, v in r.headers if k == "message-id"}
        if not ids:
            return set(), set()
        async with self._db.reader.connect() as conn:
            delivered = await conn.execute(
                select(events.c.message_id).where(
                    events.c.message_id.in_(ids), events.c.destination == self.name, events.c.type == "DELIVERED"
                )
            )
            known = await conn.execute(select(messages.c.id).where(messages.c.id.in_(ids)))
            return {r.message_id for r in delivered}, {r.id for r in known}

    @staticmethod
    def _resent_ids(records: list[ConsumedRecord]) -> set[str]:
        return {dict(r.headers)["message-id"].decode() for r in records if any(k == "resend-of" for k, _ in r.headers)}

    def receivers_for(self, envelope: Envelope) -> tuple[str, ...]:
        plan, _ = self._routes.plan(envelope.receivers, self._local_agencies())
        return plan.get(self.name, ())

    async def handle(self, record: ConsumedRecord, already_delivered: set[str], known: set[str]) -> None:
        envelope, payload_ref = envelope_from_record(record)
        if envelope.message_id not in known:
            log.warning("destination %s: message %s is not in this bus; skipped", self.name, envelope.message_id)
            return
        receivers = self.receivers_for(envelope)
        if not receivers:
            return
        if envelope.message_id in already_delivered:
            self.duplicates_skipped += 1
            return
        payload = await self._payload_store.get(payload_ref) if payload_ref else record.value
        self._event(envelope.message_id, "FORWARDING", {"receivers": list(receivers)}, status="FORWARDING")
        attempts: list[dict[str, Any]] = []
        attempt = 1
        while True:
            wait = self.breaker.wait_seconds()
            if wait > 0:
                await asyncio.sleep(wait)
            started = time.perf_counter()
            try:
                result = await self.adapter.deliver(Outbound(envelope, payload, self.name, receivers, attempt))
            except Exception as exc:
                error = (
                    exc if isinstance(exc, DeliveryError) else RetriableDeliveryError(f"{type(exc).__name__}: {exc}")
                )
                attempts.append(
                    {
                        "attempt": attempt,
                        "at": datetime.now(UTC).isoformat(),
                        "ms": round((time.perf_counter() - started) * 1000, 1),
                        **error.as_dict(),
                    }
                )
                if error.retriable:
                    self.breaker.record_failure()
                age = (datetime.now(UTC) - envelope.received_at).total_seconds()
                if not error.retriable or self.policy.gives_up(attempt, age):
                    await self._give_up(envelope, receivers, record, attempts, error)
                    return
                delay = self.policy.delay(attempt)
                self._event(
                    envelope.message_id,
                    "RETRYING",
                    {"attempt": attempt, "next_in_seconds": round(delay, 3), "error": error.reason[:300]},
                    status="RETRYING",
                )
                await asyncio.sleep(delay)
                attempt += 1
                continue
            self.breaker.record_success()
            self.delivered += 1
            self._recently_delivered[envelope.message_id] = None
            if len(self._recently_delivered) > 50_000:
                self._recently_delivered.pop(next(iter(self._recently_delivered)))
            self._event(
                envelope.message_id,
                "DELIVERED",
                {
                    "remote_id": result.remote_id,
                    "duplicate": result.duplicate,
                    "attempts": attempt,
                    "receivers": list(receivers),
                    **result.detail,
                },
                status="DELIVERED",
            )
            return

    async def _give_up(
        self,
        envelope: Envelope,
        receivers: tuple[str, ...],
        record: ConsumedRecord,
        attempts: list[dict[str, Any]],
        error: DeliveryError,
    ) -> None:
        self.dead += 1
        if not error.retriable:
            self._event(envelope.message_id, "FAILED", {"reason": error.reason[:500], **error.as_dict()}, "FAILED")
        # Events queued so far must precede DEAD in the chain.
        await self._recorder.flush()
        await self._dead_letters.add(
            message_id=envelope.message_id,
            destination=self.name,
            receivers=receivers,
            reason=error.reason,
            attempts=attempts,
            record=OutgoingRecord(record.topic, record.key, record.value, record.headers),
        )

    def _event(self, message_id: str, type: str, detail: dict[str, Any], status: str | None = None) -> None:
        self._recorder.record(
            NewEvent(message_id, type, actor=self.name, destination=self.name, detail=detail, status=status)
        )


def as_delivery_error(exc: Exception) -> DeliveryError:
    """An adapter bug or an unexpected library error counts as retriable: it may be transient, and the policy
    still dead-letters the message once it has tried enough."""
    return exc if isinstance(exc, DeliveryError) else RetriableDeliveryError(f"{type(exc).__name__}: {exc}")
