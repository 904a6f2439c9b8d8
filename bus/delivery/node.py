"""Everything that forwards, in one process: a worker per destination, the receipt matcher, receipt pollers.

Built on a :class:`~docbus.runtime.BusRuntime` (database, broker, intake) by ``docbus worker`` and ``docbus serve``.
Without a routes file there is nothing to forward to and the node does nothing.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from functools import partial
from typing import Any

from docbus.adapters.base import Adapter, Reach
from docbus.broker.base import BrokerError
from docbus.broker.embedded import EmbeddedBroker
from docbus.broker.embedded_retention import EmbeddedLogRetention
from docbus.delivery.dead_letters import DeadLetterStore
from docbus.delivery.destination_worker import DEFAULT_CONCURRENCY, DestinationWorker
from docbus.delivery.health import HealthReporter
from docbus.delivery.policy import CircuitBreaker, RetryPolicy
from docbus.delivery.receipts import ReceiptMatcher
from docbus.delivery.recorder import EventRecorder
from docbus.errors import DocbusError, RequestRejected
from docbus.metrics import COMPONENT_RESTARTS
from docbus.payload_orphans import OrphanSweep
from docbus.payload_retention import PayloadRetention
from docbus.payload_store import DirectoryPayloadStore
from docbus.routing import LOCAL, Destination, RouteTable
from docbus.runtime import BusRuntime, instance_name
from docbus.status_stream import StatusStream
from docbus.store.agencies import Role

log = logging.getLogger(__name__)

# A part that fails is started again after a pause that doubles from the first to the last value; one that ran
# for longer than the healthy span before failing starts again from the shortest pause.
RESTART_PAUSES = (1.0, 30.0)
TOPIC_SETTINGS_PAUSES = (5.0, 300.0)  # first and longest pause between tries to check the topics' settings
HEALTHY_SPAN_SECONDS = 60.0


class DeliveryNode:
    def __init__(self, runtime: BusRuntime) -> None:
        self.runtime = runtime
        self.recorder = EventRecorder(runtime.messages)
        self.dead_letters = DeadLetterStore(runtime.db, runtime.broker, runtime.topics)
        self.workers: dict[str, DestinationWorker] = {}
        self.adapters: dict[str, Adapter] = {}
        self.receipts = ReceiptMatcher(
            broker=runtime.broker,
            db=runtime.db,
            recorder=self.recorder,
            payload_store=runtime.payload_store,
            topics=runtime.topics,
        )
        self.status_stream = StatusStream(runtime.db, runtime.broker, runtime.topics, owner=runtime.relay.owner)
        self._stop = asyncio.Event()
        self._tasks: list[asyncio.Task[None]] = []
        self.restarts: dict[str, int] = {}  # part name → times it failed and was started again

    async def start(self) -> None:
        settings = self.runtime.settings
        wanted = settings.status_stream if settings.status_stream is not None else bool(settings.kafka_bootstrap)
        if wanted:
            self._spawn("docbus-status-stream", partial(self.status_stream.run, self._stop))
        retention = self._log_retention()
        if retention is not None:
            self._spawn("docbus-log-retention", partial(retention.run, self._stop))
        payload_retention = self._payload_retention()
        if payload_retention is not None:
            self._spawn("docbus-payload-retention", partial(payload_retention.run, self._stop))
        orphan_sweep = self._orphan_sweep()
        if orphan_sweep is not None:
            self._spawn("docbus-payload-orphans", partial(orphan_sweep.run, self._stop))
        if settings.kafka_bootstrap and settings.kafka_retention_hours is not None:
            self._spawn("docbus-topic-settings", self._align_topic_settings)
        routes = self.runtime.routes
        if not routes.enabled:
            log.info("no routes configured: messages are accepted and published, not forwarded")
            return
        if not settings.forwarding_enabled:
            log.info("forwarding is off in this process (DOCBUS_FORWARDING_ENABLED=false): another worker forwards")
            return
        await self.recorder.start()
        await self._create_agency_topics()
        for destination in routes.destinations:
            if destination.name == LOCAL:
                continue
            policy, breaker, concurrency, adapter = configure_destination(settings.adapters, destination)
            await adapter.start()
            self.adapters[destination.name] = adapter
            worker = DestinationWorker(
                destination.name,
                adapter,
                broker=self.runtime.broker,
                db=self.runtime.db,
                routes=routes,
                local_agencies=self.runtime.local_agencies.current,
                recorder=self.recorder,
                dead_letters=self.dead_letters,
                payload_store=self.runtime.payload_store,
                topics=self.runtime.topics,
                policy=policy,
                breaker=breaker,
                concurrency=concurrency,
            )
            self.workers[destination.name] = worker
            self._spawn(f"docbus-deliver-{destination.name}", partial(worker.run, self._stop))
            self._spawn(f"docbus-receipts-{destination.name}", partial(self._poll_receipts, destination.name, adapter))
        self._spawn("docbus-receipt-matcher", partial(self.receipts.run, self._stop))
        reporter = HealthReporter(
            self.runtime.db, instance_name("worker"), lambda: self.workers, settings.health_report_seconds
        )
        self._spawn("docbus-destination-health", partial(reporter.run, self._stop))

    def _log_retention(self) -> EmbeddedLogRetention | None:
        """The embedded log's retention, when the log is in this database and retention is on. Every worker
        runs it; two passes at once delete the same rows, which costs a little and loses nothing."""
        settings = self.runtime.settings
        broker = self.runtime.broker
        if settings.embedded_log_retention_hours <= 0 or not isinstance(broker, EmbeddedBroker):
            return None
        return EmbeddedLogRetention(
            self.runtime.db,
            retention_seconds=settings.embedded_log_retention_hours * 3600,
            interval_seconds=settings.embedded_log_retention_check_seconds,
        )

    def _payload_retention(self) -> PayloadRetention | None:
        """Payload retention, when it is on. Every worker runs it; two passes at once purge each payload once."""
        settings = self.runtime.settings
        if settings.payload_retention_days is None:
            return None
        return PayloadRetention(
            self.runtime.db,
            self.runtime.payload_store,
            self.runtime.routes,
            self.runtime.local_agencies.current,
            retention_seconds=settings.payload_retention_days * 86400,
            interval_seconds=settings.payload_retention_check_seconds,
        )

    def _orphan_sweep(self) -> OrphanSweep | None:
        """Removing payload files no message refers to, when it is on and the payloads are in a folder."""
        settings = self.runtime.settings
        store = self.runtime.payload_store
        if settings.payload_orphan_grace_hours <= 0 or not isinstance(store, DirectoryPayloadStore):
            return None
        return OrphanSweep(
            self.runtime.db,
            store,
            grace_seconds=settings.payload_orphan_grace_hours * 3600,
            interval_seconds=settings.payload_orphan_check_seconds,
        )

    async def _create_agency_topics(self) -> None:
        """Every registered agency's topic, created before the destinations' consumers subscribe.

        A topic made by its first message is seen by a pattern subscription only at the consumer's next metadata
        refresh, and then costs a rebalance: in a forwarding run started cold at 900 msg/s, the first five
        seconds' documents waited 1.7 s (median) between PUBLISHED and FORWARDING, and on a busy machine the
        backlog took half a minute to drain; with the topic made here, 21-25 ms. A broker that is away is not
        waited for: the topics are then made on first use, as before."""
        agencies = await self.runtime.directory.list()
        sending = {agency.organ_id for agency in agencies if agency.role in (Role.AGENCY, Role.AXIS)}
        if not sending:
            return
        try:
            await self.runtime.broker.ensure_topics(sorted(self.runtime.topics.agency(organ) for organ in sending))
        except BrokerError as exc:
            log.warning("agency topics not created ahead (%s); each is created by its first message", exc)

    async def _align_topic_settings(self) -> None:
        """Existing topics get the retention configured now (``DOCBUS_KAFKA_RETENTION_HOURS``), not only the
        topics created from now on: an operator who shortens it expects the old topics to follow. Tried until
        Kafka answers once, in the background, so a broker that is away delays nothing."""
        pause = TOPIC_SETTINGS_PAUSES[0]
        while not self._stop.is_set():
            try:
                changes = await self.runtime.broker.align_topic_configs(self.runtime.topics.prefix)
            except BrokerError as exc:
                log.warning("topic settings not checked (%s); trying again in %.0f s", exc, pause)
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self._stop.wait(), pause)
                pause = min(pause * 2, TOPIC_SETTINGS_PAUSES[1])
                continue
            for change in changes:
                log.info(
                    "topic %s: %s changed from %s to %s",
                    change.topic,
                    change.name,
                    change.before or "the broker's default",
                    change.after,
                )
            return

    def _spawn(self, name: str, run: Callable[[], Awaitable[None]]) -> None:
        self._tasks.append(asyncio.create_task(self._supervise(name, run), name=name))

    async def _supervise(self, name: str, run: Callable[[], Awaitable[None]]) -> None:
        """Run one long-lived part until the node stops, starting it again whenever it fails.

        Each part already rides out the failures it expects (a broker that is away, a destination that is
        down); this is for the rest, e.g. Kafka too slow to answer while a consumer starts. Without it, one
        such error at start-up left a destination without a consumer for the life of the process, and its
        messages waited, silently, until a restart."""
        loop = asyncio.get_running_loop()
        pause = RESTART_PAUSES[0]
        while not self._stop.is_set():
            started = loop.time()
            try:
                await run()
                return  # parts return only when the node stops
            except asyncio.CancelledError:
                raise
            except Exception:
                if loop.time() - started > HEALTHY_SPAN_SECONDS:
                    pause = RESTART_PAUSES[0]
                self.restarts[name] = self.restarts.get(name, 0) + 1
                COMPONENT_RESTARTS.labels(name).inc()
                log.exception("%s failed; starting it again in %g s", name, pause)
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._stop.wait(), timeout=pause)
            pause = min(RESTART_PAUSES[1], pause * 2)

    async def _poll_receipts(self, name: str, adapter: Adapter) -> None:
        """Fetch business receipts waiting at an axis and take them in like any message (trusted: the adapter
        speaks for the axis it is configured for)."""
        interval = self.runtime.settings.receipt_poll_seconds
        limit = asyncio.Semaphore(16)
        while not self._stop.is_set():
            health = self.workers[name].health
            try:
                packets = await adapter.fetch_receipts()
                # Concurrently, so the intake writer group-commits them; each is acknowledged once stored.
                await asyncio.gather(*(self._take_receipt(name, adapter, p, limit) for p in packets))
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                health.receipts_failed(exc)
            else:
                health.receipts_fetched()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._stop.wait(), timeout=interval)

    async def _take_receipt(self, name: str, adapter: Adapter, packet: bytes, limit: asyncio.Semaphore) -> None:
        async with limit:
            try:
                await self.runtime.intake.accept(None, packet, "application/xml")
                ok = True
            except RequestRejected as exc:
                log.warning("receipt from %s refused: %s %s", name, exc.status, exc.detail)
                ok = False
            await adapter.acknowledge_receipt(packet, ok)

    async def aclose(self) -> None:
        self._stop.set()
        for task in self._tasks:
            task.cancel()
        for task in self._tasks:
            with contextlib.suppress(asyncio.CancelledError):
                await task
        self._tasks.clear()
        for adapter in self.adapters.values():
            with contextlib.suppress(Exception):
                await adapter.aclose()
        await self.recorder.aclose()


def configure_destination(
    adapters: dict[str, dict[str, Any]], destination: Destination
) -> tuple[RetryPolicy, CircuitBreaker, int, Adapter]:
    """The retry policy, breaker, concurrency and (unstarted) adapter of ``destination`` from the
    ``DOCBUS_ADAPTERS__<NAME>__*`` settings; ``ValueError`` (pydantic's included) or ``AdapterConfigError``
    naming what is wrong. Shared by the worker and ``docbus config check``, so the check judges what would run."""
    from docbus.adapters.registry import build_adapter  # entry points are read only when forwarding

    config = _config_for(adapters, destination.name)
    policy = RetryPolicy.model_validate(config.pop("retry", {}))
    breaker = CircuitBreaker(**config.pop("breaker", {}))
    concurrency = _concurrency(destination.name, config.pop("concurrency", DEFAULT_CONCURRENCY))
    return policy, breaker, concurrency, build_adapter(destination.adapter, config)


@dataclass(frozen=True, slots=True)
class DestinationCheck:
    """Whether one destination's adapter can be built from the settings (``problem`` says why not) and, when
    probed, what the probe found (``reach``; ``None``: not probed, or the adapter cannot tell)."""

    destination: Destination
    problem: str | None = None
    detail: str = ""
    reach: Reach | None = None


async def check_destinations(
    adapters: dict[str, dict[str, Any]], routes: RouteTable, *, probe_timeout: float | None = None
) -> list[DestinationCheck]:
    """Builds (and closes, unstarted) every destination's adapter as :meth:`DeliveryNode.start` will: what
    ``docbus config check`` reports, and what stops ``docbus serve`` and ``docbus worker`` with one line per
    destination before they start, instead of a traceback from inside the server's start-up. With
    ``probe_timeout`` each adapter also probes its destination (``Adapter.probe``), sending nothing."""
    checks = []
    for destination in routes.destinations:
        if destination.name == LOCAL:
            continue
        try:
            _, _, concurrency, adapter = configure_destination(adapters, destination)
        except Exception as exc:  # pydantic, the adapter registry, a plug-in's own checks: report, never crash
            problem = str(exc) if isinstance(exc, DocbusError) else f"adapter {destination.adapter}: {exc}"
            checks.append(DestinationCheck(destination, problem=problem))
            continue
        reach = None
        try:
            if probe_timeout is not None:
                async with asyncio.timeout(2 * probe_timeout):  # a plug-in's probe that ignores its timeout
                    reach = await adapter.probe(probe_timeout)
        except Exception as exc:  # a plug-in's probe that fails is a finding, not a crash of the check
            reach = Reach(False, f"the probe failed: {type(exc).__name__}: {exc}")
        finally:
            with contextlib.suppress(Exception):
                await adapter.aclose()  # never started: nothing was opened, but give back what __init__ took
        detail = f"adapter {destination.adapter} ({type(adapter).__name__}), {concurrency} deliveries at once"
        checks.append(DestinationCheck(destination, detail=detail, reach=reach))
    return checks


def _config_for(adapters: dict[str, dict[str, Any]], name: str) -> dict[str, Any]:
    """Environment keys arrive lower-cased (``DOCBUS_ADAPTERS__NATIONAL_AXIS__URL`` → ``national_axis.url``)."""
    for key, value in adapters.items():
        if key.lower() == name.lower():
            return {k.lower(): v for k, v in value.items()}
    return {}


def _concurrency(destination: str, value: Any) -> int:
    """``DOCBUS_ADAPTERS__<NAME>__CONCURRENCY``: deliveries in flight to one destination (1 to 1024)."""
    try:
        count = int(value)
    except (TypeError, ValueError):
        count = 0
    if not 1 <= count <= 1024:
        raise ValueError(f"adapter {destination}: concurrency must be a whole number from 1 to 1024, not {value!r}")
    return count
