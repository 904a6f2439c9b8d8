"""A worker's view of one destination (``docbus.delivery.health``) and the state the overview derives from the
workers' reports (``docbus.destinations``)."""

from __future__ import annotations

import logging
from datetime import UTC, datetime
from typing import Any

import pytest

from docbus.adapters.base import RetriableDeliveryError
from docbus.delivery import health as health_module
from docbus.delivery.health import REASON_CHARS, DestinationHealth
from docbus.destinations import destination_state


def report(**values: Any) -> dict[str, Any]:
    return {"breaker": "closed", "failing_attempts": 0, **values}


def test_the_state_comes_from_the_fresh_reports() -> None:
    assert destination_state([]) == "unknown"
    assert destination_state([report(), report()]) == "up"
    assert destination_state([report(), report(failing_attempts=2)]) == "failing"
    assert destination_state([report(breaker="half-open", failing_attempts=7)]) == "failing"
    assert destination_state([report(failing_attempts=2), report(breaker="open", failing_attempts=5)]) == "down"


def test_deliveries_count_and_a_success_ends_the_failing_run() -> None:
    health = DestinationHealth("national_axis", started_at=datetime.now(UTC))
    health.delivery_failed("x" * (REASON_CHARS + 50))
    health.delivery_failed("national axis sendEdoc: HTTP 503")
    row = health.row(breaker="open", in_flight=3)
    assert (row["failing_attempts"], row["failed_attempts"], row["delivered"]) == (2, 2, 0)
    assert row["last_failure"] == "national axis sendEdoc: HTTP 503" and row["breaker"] == "open"
    health.delivery_failed("y" * (REASON_CHARS + 50))
    assert len(health.last_failure or "") == REASON_CHARS
    health.delivery_succeeded()
    row = health.row(breaker="closed", in_flight=0)
    assert (row["failing_attempts"], row["failed_attempts"], row["delivered"]) == (0, 3, 1)
    assert row["last_success_at"] >= row["last_failure_at"]


def test_failing_receipt_fetches_are_logged_once_per_run_then_rarely(
    caplog: pytest.LogCaptureFixture, monkeypatch: pytest.MonkeyPatch
) -> None:
    clock = [100.0]
    monkeypatch.setattr(health_module.time, "monotonic", lambda: clock[0])
    health = DestinationHealth("national_axis", started_at=datetime.now(UTC))
    with caplog.at_level(logging.INFO, logger="docbus.delivery.health"):
        health.receipts_failed(RetriableDeliveryError("national axis getReceivedEdocList: HTTP 503"))
        since = health.receipts_failure_at
        for _ in range(20):  # every poll for the next 59 s: nothing more in the log
            clock[0] += 2.9
            health.receipts_failed(RetriableDeliveryError("national axis getReceivedEdocList: HTTP 503"))
        clock[0] += 5
        health.receipts_failed(KeyError("content"))
        health.receipts_fetched()
    messages = [(r.levelname, r.getMessage(), r.exc_info is not None) for r in caplog.records]
    assert messages[0] == (
        "ERROR",
        "fetching receipts from national_axis failed: national axis getReceivedEdocList: HTTP 503",
        False,
    )
    assert messages[1][0] == "ERROR" and messages[1][1].startswith("fetching receipts from national_axis still fails")
    assert messages[1][1].endswith(": 'content'")
    assert messages[2][0] == "WARNING" and "works again" in messages[2][1]
    assert len(messages) == 3
    assert health.receipts_failure_at == since  # the run's start, not its latest failure
    assert health.row(breaker="closed", in_flight=0)["receipts_failure"] is None
