"""One destination's consumer: reads the agency topics, delivers what routes to it, retries, dead-letters.

Each destination has its own consumer group (``docbus.deliver.<destination>``), retry policy and circuit breaker,
so a destination that is down or slow never delays another. Within a destination, records with different keys
(business ids) are delivered concurrently and records with the same key in order, so one document's messages
arrive in the order they were accepted. Records are taken continuously, not batch by batch: a document whose
delivery is being retried holds back only the later messages of the same document. The group's offset moves
past a record only once it and every record before it in its partition are delivered or dead-lettered and their
events are stored (``offsets.CommitTracker``): a crash re-delivers, and the destination deduplicates by message
id.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections import Counter
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import select

from docbus.adapters.base import Adapter, DeliveryError, Outbound, RetriableDeliveryError
from docbus.broker.base import Broker, BrokerConsumer, BrokerError, ConsumedRecord, ConsumerFenced, OutgoingRecord
from docbus.delivery.dead_letters import DeadLetterStore
from docbus.delivery.health import DestinationHealth
from docbus.delivery.offsets import CommitTracker, Entry
from docbus.delivery.policy import CircuitBreaker, RetryPolicy
from docbus.delivery.recorder import EventRecorder, EventsNotStored
from docbus.envelope import Envelope, MessageStatus
from docbus.metrics import DELIVERIES, DELIVERY_LATENCY
from docbus.payload_store import PayloadStore
from docbus.records import NotADocbusRecord, envelope_from_record, message_id_of
from docbus.routing import RouteTable
from docbus.store.database import Database, InlineConnection
from docbus.store.messages import NewEvent
from docbus.store.sqlite_intake import placeholders
from docbus.store.tables import events, messages
from docbus.topics import Topics

log = logging.getLogger(__name__)

STOP_GRACE_SECONDS = 5.0  # how long a stopping worker lets deliveries under way finish


# Deliveries in flight per destination. Each takes its round trip plus the worker's own work, 25-35 ms at 900
# msg/s on two cores: with 32 the slots themselves capped a destination near that rate, and documents queued
# for a slot 40-100 ms (median) before their attempt began; with 64 that wait fell to 7-10 ms.
DEFAULT_CONCURRENCY = 64


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
        concurrency: int = DEFAULT_CONCURRENCY,
        max_in_flight: int = 2000,
        commit_interval: float = 0.2,
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
        self.health = DestinationHealth(name, started_at=datetime.now(UTC))
        self._concurrency = asyncio.Semaphore(concurrency)
        self._topics = topics
        self.group = topics.deliver_group(name)
        self.delivered = 0
        self.duplicates_skipped = 0
        # Delivered by this worker and maybe not yet visible in the database (events are written in batches).
        self._recently_delivered: dict[str, None] = {}
        self.dead = 0
        self._max_in_flight = max_in_flight
        self._commit_interval = commit_interval
        self._tails: dict[bytes | None, asyncio.Task[None]] = {}  # the last record taken, per key
        self._in_flight: dict[asyncio.Task[None], tuple[str, bytes | None]] = {}  # deliveries → (message id, key)
        self._in_flight_ids: Counter[str] = Counter()
        self._uncommitted: dict[tuple[str, int], ConsumedRecord] = {}  # finished, commit failed: with the next
        self._progress = asyncio.Event()  # set whenever a delivery finishes
        self._failure: BaseException | None = None
        self._committing: asyncio.Task[None] | None = None  # at most one commit under way, beside the reading

    @property
    def breaker_state(self) -> str:
        return self.breaker.state

    @property
    def in_flight(self) -> int:
        """Deliveries taken and not finished (retries waiting their turn included)."""
        return len(self._in_flight)

    async def run(self, stop: asyncio.Event) -> None:
        resend = self._topics.resend(self.name)
        await self._broker.ensure_topics([resend])
        consumer = self._broker.consumer(self.group, topics=[resend], pattern=self._topics.agency_pattern)
        await consumer.start()
        try:
            await self._consume(stop, consumer)
        finally:
            await self._cancel_in_flight()
            await self._abandon_commit()
            await consumer.aclose()

    async def _consume(self, stop: asyncio.Event, consumer: BrokerConsumer) -> None:
        """Take records while fewer than ``max_in_flight`` are unfinished; commit what is done every
        ``commit_interval``. No batch barrier: a record being retried holds back only its own business id (and
        the group's offset in its partition), and records are delivered as soon as they are read. A commit runs
        beside the reading: it waits for the events to be written, which waits for the database's write lock,
        and records that arrive meanwhile would otherwise wait too."""
        loop = asyncio.get_running_loop()
        tracker = CommitTracker()
        self._failure = None
        last_commit = loop.time()
        while not stop.is_set():
            if self._failure is not None:
                raise self._failure
            await self._settle_commit(consumer, tracker)
            room = self._max_in_flight - len(tracker)
            records: list[ConsumedRecord] = []
            if room > 0:
                try:
                    records = await consumer.poll(max_records=min(500, room), timeout=self._commit_interval)
                except BrokerError as exc:
                    log.warning("%s: broker unavailable: %s", self.group, exc)
                    await asyncio.sleep(1.0)
                    continue
            else:  # full: wait for deliveries to finish
                self._progress.clear()
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self._progress.wait(), timeout=self._commit_interval)
            if records:
                await self._dispatch(records, tracker)
            if self._committing is None and (not records or loop.time() - last_commit >= self._commit_interval):
                self._start_commit(consumer, tracker)
                last_commit = loop.time()
        # Stopping: let what is under way finish for a moment, so that it need not be delivered again.
        if self._in_flight:
            await asyncio.wait(list(self._in_flight), timeout=STOP_GRACE_SECONDS)
        if self._committing is not None:
            await asyncio.wait([self._committing])
            with contextlib.suppress(BrokerError, EventsNotStored):
                await self._settle_commit(consumer, tracker)
        with contextlib.suppress(BrokerError, EventsNotStored):
            await self._commit(consumer, tracker)

    async def _dispatch(self, records: list[ConsumedRecord], tracker: CommitTracker) -> None:
        delivered, known = await self._lookup(records)
        # An operator's resend is delivered even if an earlier attempt got through.
        already = delivered - self._resent_ids(records)
        mark = self._recorder.mark()
        for record in records:
            entry = tracker.add(record, mark)
            message_id = message_id_of(record)
            resend = any(key == "resend-of" for key, _ in record.headers)
            # The relay may have published a message twice (at-least-once); deliver it once. A record without a
            # message id is not docbus' and is no one's duplicate: ``handle`` reports each such record.
            if (
                message_id
                and not resend
                and (message_id in self._recently_delivered or message_id in self._in_flight_ids)
            ):
                self.duplicates_skipped += 1
                entry.done = True
                continue
            previous = self._tails.get(record.key)
            task = asyncio.create_task(self._deliver_after(previous, record, entry, already, known))
            self._tails[record.key] = task
            self._in_flight[task] = (message_id, record.key)
            self._in_flight_ids[message_id] += 1
            task.add_done_callback(self._finished)

    async def _deliver_after(
        self,
        previous: asyncio.Task[None] | None,
        record: ConsumedRecord,
        entry: Entry,
        already: set[str],
        known: set[str],
    ) -> None:
        """Deliver ``record`` once the previous record with its key is done: one document's messages in order."""
        if previous is not None and not previous.done():
            await asyncio.wait([previous])
        async with self._concurrency:
            await self.handle(record, already, known)
        entry.done = True

    def _finished(self, task: asyncio.Task[None]) -> None:
        message_id, key = self._in_flight.pop(task)
        self._in_flight_ids[message_id] -= 1
        if not self._in_flight_ids[message_id]:
            del self._in_flight_ids[message_id]
        if self._tails.get(key) is task:
            del self._tails[key]
        self._progress.set()
        if not task.cancelled() and task.exception() is not None and self._failure is None:
            # Not a delivery failure (``handle`` turns those into retries and dead letters): the database or the
            # payload store failed. Start over from the last commit rather than skip the record.
            self._failure = task.exception()

    def _start_commit(self, consumer: BrokerConsumer, tracker: CommitTracker) -> None:
        """Commit, in a task of its own, the offsets past what is finished; :meth:`_settle_commit` takes its
        outcome."""
        ready, mark = tracker.committable()
        for record in ready:
            self._uncommitted[(record.topic, record.partition)] = record
        if self._uncommitted:
            self._committing = asyncio.create_task(
                self._commit_offsets(consumer, dict(self._uncommitted), mark), name=f"{self.group}-commit"
            )

    async def _commit_offsets(
        self, consumer: BrokerConsumer, offsets: dict[tuple[str, int], ConsumedRecord], mark: int | None
    ) -> None:
        await self._recorder.flush(since=mark)  # events are stored before the offsets move past them
        await consumer.commit(list(offsets.values()))
        for partition, record in offsets.items():  # a later record of a partition may have come meanwhile
            if self._uncommitted.get(partition) is record:
                del self._uncommitted[partition]

    async def _settle_commit(self, consumer: BrokerConsumer, tracker: CommitTracker) -> None:
        """Act on a finished commit; one still under way is left alone."""
        task = self._committing
        if task is None or not task.done():
            return
        self._committing = None
        error = None if task.cancelled() else task.exception()
        if error is None:
            return
        if isinstance(error, EventsNotStored):
            # Their DELIVERED events may be among the lost: when the records come again, the database decides.
            self._recently_delivered.clear()
            raise error
        if isinstance(error, ConsumerFenced):
            # The group moved partitions: what this member had under way is re-read by their new owner (or by
            # this member, from the last commit); destinations deduplicate what was sent twice.
            log.info("%s: %s; reading again from the last commit", self.group, error)
            await self._cancel_in_flight()
            tracker.clear()
            self._uncommitted.clear()
            await consumer.seek_to_committed()
            return
        if isinstance(error, BrokerError):
            log.warning("%s: commit failed, will be tried with the next one: %s", self.group, error)
            return
        raise error

    async def _commit(self, consumer: BrokerConsumer, tracker: CommitTracker) -> None:
        """Commit and settle in one go (when stopping)."""
        self._start_commit(consumer, tracker)
        if self._committing is not None:
            await asyncio.wait([self._committing])
            await self._settle_commit(consumer, tracker)

    async def _abandon_commit(self) -> None:
        task, self._committing = self._committing, None
        if task is not None and not task.done():
            task.cancel()
            await asyncio.wait([task])
        if task is not None and not task.cancelled():
            task.exception()  # retrieved: its outcome no longer matters

    async def _cancel_in_flight(self) -> None:
        tasks = list(self._in_flight)
        for task in tasks:
            task.cancel()
        if tasks:
            await asyncio.wait(tasks)
        self._tails.clear()

    async def _lookup(self, records: list[ConsumedRecord]) -> tuple[set[str], set[str]]:
        """(message ids this destination already delivered, message ids this bus knows).

        A record re-read after a crash, or published twice by the relay, is not sent twice; a record whose
        message is not in this bus' database (another bus sharing the topic prefix) is skipped, not guessed at.
        """
        ids = {message_id_of(r) for r in records} - {""}
        if not ids:
            return set(), set()
        async with self._db.reading() as conn:
            if isinstance(conn, InlineConnection):
                # A SQLite file: plain SQL on the driver connection. Building and caching the expanding IN of
                # the statements below cost about a tenth of a forwarding worker's CPU.
                raw, listed = conn.driver_connection, sorted(ids)
                marks = placeholders(listed)
                delivered_sql = (
                    f"SELECT message_id FROM events WHERE message_id IN ({marks}) "  # noqa: S608
                    "AND destination = ? AND type = 'DELIVERED'"
                )
                return (
                    {row[0] for row in raw.execute(delivered_sql, [*listed, self.name])},
                    {row[0] for row in raw.execute(f"SELECT id FROM messages WHERE id IN ({marks})", listed)},  # noqa: S608
                )
            delivered = await conn.execute(
                select(events.c.message_id).where(
                    events.c.message_id.in_(ids), events.c.destination == self.name, events.c.type == "DELIVERED"
                )
            )
            known = await conn.execute(select(messages.c.id).where(messages.c.id.in_(ids)))
            return {r.message_id for r in delivered}, {r.id for r in known}

    async def _purged(self, message_id: str) -> bool:
        async with self._db.reader.connect() as conn:
            at = await conn.scalar(select(messages.c.payload_purged_at).where(messages.c.id == message_id))
        return at is not None

    @staticmethod
    def _resent_ids(records: list[ConsumedRecord]) -> set[str]:
        return {message_id_of(r) for r in records if any(k == "resend-of" for k, _ in r.headers)}

    def receivers_for(self, envelope: Envelope) -> tuple[str, ...]:
        plan, _ = self._routes.plan(envelope.receivers, self._local_agencies())
        return plan.get(self.name, ())

    async def handle(self, record: ConsumedRecord, already_delivered: set[str], known: set[str]) -> None:
        try:
            envelope, payload_ref = envelope_from_record(record)
        except NotADocbusRecord as exc:
            DELIVERIES.labels(self.name, "unreadable").inc()
            log.error("destination %s: %s is not a docbus record; skipped", self.name, exc)
            return
        if envelope.message_id not in known:
            log.warning("destination %s: message %s is not in this bus; skipped", self.name, envelope.message_id)
            return
        receivers = self.receivers_for(envelope)
        if not receivers:
            return
        if envelope.message_id in already_delivered:
            self.duplicates_skipped += 1
            return
        payload = record.value
        if payload_ref:
            try:
                payload = await self._payload_store.get(payload_ref)
            except (KeyError, FileNotFoundError):
                if not await self._purged(envelope.message_id):
                    raise
                # Read again (a consumer group that lost its offsets) after retention deleted it: it was settled.
                log.info(
                    "destination %s: the payload of %s was deleted by retention; not sent again",
                    self.name,
                    envelope.message_id,
                )
                return
        self._event(envelope.message_id, "FORWARDING", {"receivers": list(receivers)}, status=MessageStatus.FORWARDING)
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
                self.health.delivery_failed(error.reason)
                if error.retriable:
                    self.breaker.record_failure()
                age = (datetime.now(UTC) - envelope.received_at).total_seconds()
                if not error.retriable or self.policy.gives_up(attempt, age):
                    await self._give_up(envelope, receivers, record, attempts, error)
                    return
                delay = self.policy.delay(attempt)
                DELIVERIES.labels(self.name, "retrying").inc()
                self._event(
                    envelope.message_id,
                    "RETRYING",
                    {"attempt": attempt, "next_in_seconds": round(delay, 3), "error": error.reason[:300]},
                    status=MessageStatus.RETRYING,
                )
                await asyncio.sleep(delay)
                attempt += 1
                continue
            self.breaker.record_success()
            self.health.delivery_succeeded()
            self.delivered += 1
            DELIVERIES.labels(self.name, "duplicate" if result.duplicate else "delivered").inc()
            DELIVERY_LATENCY.labels(self.name).observe((datetime.now(UTC) - envelope.received_at).total_seconds())
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
                status=MessageStatus.DELIVERED,
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
        DELIVERIES.labels(self.name, "dead").inc()
        if not error.retriable:
            DELIVERIES.labels(self.name, "failed").inc()
            refusal = {"reason": error.reason[:500], **error.as_dict()}
            self._event(envelope.message_id, "FAILED", refusal, MessageStatus.FAILED)
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
        """Stamped now, when it happens (an attempt starts, an axis answers); the recorder writes it later."""
        self._recorder.record(
            NewEvent(
                message_id,
                type,
                actor=self.name,
                destination=self.name,
                detail=detail,
                status=status,
                at=datetime.now(UTC),
            )
        )


def as_delivery_error(exc: Exception) -> DeliveryError:
    """An adapter bug or an unexpected library error counts as retriable: it may be transient, and the policy
    still dead-letters the message once it has tried enough."""
    return exc if isinstance(exc, DeliveryError) else RetriableDeliveryError(f"{type(exc).__name__}: {exc}")
