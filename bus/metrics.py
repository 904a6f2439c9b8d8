"""Prometheus metrics of one process (``/metrics``)."""

from __future__ import annotations

from prometheus_client import Counter

INTAKE_ACCEPTED = Counter("docbus_intake_accepted_total", "Messages accepted and made durable")
INTAKE_REPLAYED = Counter("docbus_intake_replayed_total", "Submissions answered with an earlier receipt")
INTAKE_REJECTED = Counter("docbus_intake_rejected_total", "Requests refused", ["status", "type"])
COMPONENT_RESTARTS = Counter(
    "docbus_component_restarts_total",
    "Long-lived parts (consumers, pollers) that failed and were started again",
    ["part"],
)
