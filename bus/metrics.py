"""Prometheus metrics (``/metrics`` on a gateway, ``docbus worker --metrics-port`` on a worker).

A process keeps its own counters. When one command runs several processes (``docbus gateway --workers N``), each
writes them to a directory shared by the group (prometheus_client's multiprocess mode, ``PROMETHEUS_MULTIPROC_DIR``,
set by the command before its processes start), and ``/metrics`` sums them, so a scrape answered by any of them
counts everything the command did. Totals over every process of a deployment are Prometheus' sums over its
targets; what the whole bus did with a window's messages is ``GET /v1/flows``, read from the database.
"""

from __future__ import annotations

import os

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest
from prometheus_client import multiprocess as prometheus_multiprocess

MULTIPROCESS_DIR_VARIABLE = "PROMETHEUS_MULTIPROC_DIR"

INTAKE_ACCEPTED = Counter("docbus_intake_accepted_total", "Messages accepted and made durable")
INTAKE_REPLAYED = Counter("docbus_intake_replayed_total", "Submissions answered with an earlier receipt")
INTAKE_REJECTED = Counter("docbus_intake_rejected_total", "Requests refused", ["status", "type"])
INTAKE_WRITE_FAILURES = Counter(
    "docbus_intake_write_failures_total",
    "Group commits that failed, their messages refused with 503 (reason: full storage or another error)",
    ["reason"],
)
PAYLOAD_WRITE_FAILURES = Counter(
    "docbus_payload_write_failures_total",
    "Claim-checked payloads the payload store failed to write, their messages refused with 503 (reason: full "
    "storage or another error)",
    ["reason"],
)
INTAKE_SECONDS = Histogram(
    "docbus_intake_seconds",
    "POST /v1/messages from the request's arrival to its answer (receipt or refusal), by HTTP status class",
    ["status"],
    buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30),
)
BODY_BYTES_HELD = Gauge(
    "docbus_gateway_body_bytes",
    "Bytes of request bodies the gateway holds now: charged as they arrive, given back when their request is done "
    "(DOCBUS_INFLIGHT_BODY_BYTES is the most one process may hold)",
    multiprocess_mode="livesum",
)
CERTIFICATE_NOT_AFTER = Gauge(
    "docbus_gateway_certificate_expiry_timestamp_seconds",
    "When the HTTPS certificate the gateway serves expires (Unix time; the earliest among its processes): alert on "
    "it, since a renewed certificate is taken by the running gateway only once its files are replaced",
    multiprocess_mode="livemin",
)
COMPONENT_RESTARTS = Counter(
    "docbus_component_restarts_total",
    "Long-lived parts (consumers, pollers) that failed and were started again",
    ["part"],
)
EMBEDDED_LOG_TRIMMED = Counter(
    "docbus_embedded_log_trimmed_total",
    "Records the embedded broker's retention deleted (consumed by every reader and older than the retention)",
)
PAYLOADS_PURGED = Counter(
    "docbus_payloads_purged_total",
    "Payloads payload retention deleted (settled messages older than DOCBUS_PAYLOAD_RETENTION_DAYS)",
)
PUBLISHED = Counter("docbus_published_total", "Messages the outbox relay published to their agency topic")
DELIVERIES = Counter(
    "docbus_deliveries_total",
    "Delivery outcomes per destination: delivered, duplicate (the destination had it already), retrying (an "
    "attempt failed, another follows), failed (refused for good), dead (given up: retries exhausted or refused, "
    "so a refusal counts as failed and as dead)",
    ["destination", "outcome"],
)
DELIVERY_LATENCY = Histogram(
    "docbus_delivery_latency_seconds",
    "From a message's arrival at the bus to a destination's acknowledgement",
    ["destination"],
    buckets=(0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 300, 1800, 3600),
)
BREAKER_OPEN = Gauge(
    "docbus_destination_breaker_open",
    "1 while a destination's circuit breaker holds its deliveries back (the destination failed too often), else 0",
    ["destination"],
    multiprocess_mode="livemax",
)
DELIVERIES_IN_FLIGHT = Gauge(
    "docbus_destination_in_flight",
    "Deliveries to a destination under way in this worker, retries waiting their turn included",
    ["destination"],
    multiprocess_mode="livesum",
)
RECEIPTS = Counter("docbus_receipts_total", "Business receipts (edXML status messages) matched, by code", ["code"])


def exposition() -> bytes:
    """What ``/metrics`` answers: this process' metrics, or its command's processes' summed."""
    if os.environ.get(MULTIPROCESS_DIR_VARIABLE):
        registry = CollectorRegistry()
        prometheus_multiprocess.MultiProcessCollector(registry)  # type: ignore[no-untyped-call]
        return generate_latest(registry)
    return generate_latest()
