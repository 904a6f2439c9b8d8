"""How each destination fares, as the worker that forwards to it sees it, written where every gateway can read it.

A destination that is down never holds up the others, so nothing else shows that it is down: its documents wait
in retries, its breaker holds them back, and the operator learns of it from a sender. Each worker therefore keeps
a :class:`DestinationHealth` per destination (deliveries and failed attempts, the latest of each with its reason,
the same for fetching the destination's receipts) and a :class:`HealthReporter` writes them, with the breaker's
state and the deliveries in flight, to ``destination_health`` every ``DOCBUS_HEALTH_REPORT_SECONDS`` and on its
metrics (``docbus_destination_breaker_open``, ``docbus_destination_in_flight``). ``GET /v1/destinations``,
``docbus destinations`` and the dashboard read them (``docbus.destinations``).

A destination whose receipts cannot be fetched is logged the way failing writes are: the first failure of a run
(with its traceback when it is not a delivery error), then a line at most every minute, then one on recovery; the
poll runs every two seconds, and a traceback each time would bury everything else.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, Protocol

from docbus.adapters.base import DeliveryError
from docbus.metrics import BREAKER_OPEN, DELIVERIES_IN_FLIGHT
from docbus.store.database import Database
from docbus.store.destination_health import remove_reports, write_reports

log = logging.getLogger(__name__)

REASON_CHARS = 500  # of a failure's reason, as kept and shown
RECEIPT_FAILURE_LOG_INTERVAL = 60.0


@dataclass
class DestinationHealth:
    """One destination as one worker process sees it, since the process started."""

    destination: str
    started_at: datetime
    delivered: int = 0
    failed_attempts: int = 0
    failing_attempts: int = 0  # since the last success: 0 while deliveries go through
    last_success_at: datetime | None = None
    last_failure_at: datetime | None = None
    last_failure: str | None = None
    receipts_ok_at: datetime | None = None
    receipts_failure_at: datetime | None = None
    receipts_failure: str | None = None
    _receipts_logged: float = 0.0  # monotonic time of the last log line about failing receipt fetches

    def delivery_succeeded(self) -> None:
        self.delivered += 1
        self.failing_attempts = 0
        self.last_success_at = datetime.now(UTC)

    def delivery_failed(self, reason: str) -> None:
        self.failed_attempts += 1
        self.failing_attempts += 1
        self.last_failure_at = datetime.now(UTC)
        self.last_failure = reason[:REASON_CHARS]

    def receipts_fetched(self) -> None:
        if self.receipts_failure is not None:
            log.warning("fetching receipts from %s works again (failing since %s)", self.destination, _at(self))
        self.receipts_ok_at = datetime.now(UTC)
        self.receipts_failure = None

    def receipts_failed(self, exc: Exception) -> None:
        reason = (str(exc) or type(exc).__name__)[:REASON_CHARS]
        first = self.receipts_failure is None
        self.receipts_failure_at = datetime.now(UTC) if first else self.receipts_failure_at
        self.receipts_failure = reason
        now = time.monotonic()
        if first:
            # A delivery error is the destination's answer, said in full by its reason; anything else is ours.
            trace = None if isinstance(exc, DeliveryError) else exc
            log.error("fetching receipts from %s failed: %s", self.destination, reason, exc_info=trace)
            self._receipts_logged = now
        elif now - self._receipts_logged >= RECEIPT_FAILURE_LOG_INTERVAL:
            log.error("fetching receipts from %s still fails (since %s): %s", self.destination, _at(self), reason)
            self._receipts_logged = now

    def row(self, *, breaker: str, in_flight: int) -> dict[str, Any]:
        """The ``destination_health`` columns of this report (the writer adds worker and time)."""
        return {
            "destination": self.destination,
            "breaker": breaker,
            "in_flight": in_flight,
            "failing_attempts": self.failing_attempts,
            "delivered": self.delivered,
            "failed_attempts": self.failed_attempts,
            "last_success_at": self.last_success_at,
            "last_failure_at": self.last_failure_at,
            "last_failure": self.last_failure,
            "receipts_ok_at": self.receipts_ok_at,
            "receipts_failure_at": self.receipts_failure_at if self.receipts_failure else None,
            "receipts_failure": self.receipts_failure,
            "started_at": self.started_at,
        }


def _at(health: DestinationHealth) -> str:
    since = health.receipts_failure_at
    return since.isoformat(timespec="seconds") if since else "?"


class Reporting(Protocol):
    """What the reporter reads of a destination's worker."""

    health: DestinationHealth

    @property
    def breaker_state(self) -> str: ...

    @property
    def in_flight(self) -> int: ...


class HealthReporter:
    """Writes this worker's :class:`DestinationHealth` rows every ``interval`` seconds, and removes them when
    it stops so that a worker shut down on purpose does not look like one that died."""

    def __init__(
        self, db: Database, worker: str, destinations: Callable[[], Mapping[str, Reporting]], interval: float
    ) -> None:
        self._db = db
        self.worker = worker
        self._destinations = destinations
        self._interval = interval
        self._failing = False

    async def run(self, stop: asyncio.Event) -> None:
        try:
            while not stop.is_set():
                await self.report()
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(stop.wait(), timeout=self._interval)
        finally:
            with contextlib.suppress(Exception):
                await remove_reports(self._db, self.worker)

    async def report(self) -> None:
        rows = []
        for name, part in self._destinations().items():
            breaker, in_flight = part.breaker_state, part.in_flight
            BREAKER_OPEN.labels(name).set(1 if breaker == "open" else 0)
            DELIVERIES_IN_FLIGHT.labels(name).set(in_flight)
            rows.append(part.health.row(breaker=breaker, in_flight=in_flight))
        try:
            await write_reports(self._db, self.worker, rows, datetime.now(UTC))
        except Exception as exc:  # the database is down: deliveries say so themselves; try again next time
            if not self._failing:
                log.warning("could not write the destinations' health: %s: %s", type(exc).__name__, exc)
            self._failing = True
            return
        if self._failing:
            log.info("the destinations' health is written again")
        self._failing = False
