"""How each destination of the routes fares now, from the workers' reports: what ``GET /v1/destinations``,
``docbus destinations`` and the dashboard show.

A destination's state, from the reports of the workers that forward to it, renewed within the last three
report intervals (an older report is a worker that stopped without saying so, shown as stale):

- ``down``: a worker's circuit breaker holds deliveries back (the destination failed too often in a row);
- ``failing``: a worker's latest attempt failed and none has succeeded since (retries are under way);
- ``up``: no worker is failing (receipts that cannot be fetched are shown beside, not in the state: the
  documents still go through);
- ``unknown``: no worker reported on it recently (none runs, forwarding is off, or they cannot write).

Beside the state: the dead letters waiting for a resend, the most recent success (``last_success_at``) and failure
(``last_failure``: ``at``, ``reason``) over the workers, whether receipts can be fetched (``receipts_failing``:
``since``, ``reason``; ``null`` when they can), and each worker's own report.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

from docbus.routing import LOCAL, RouteTable
from docbus.store.audit import as_utc, utc_iso
from docbus.store.database import Database
from docbus.store.destination_health import dead_letters_waiting, read_reports

STALE_AFTER_REPORTS = 3


def _latest(
    reports: list[dict[str, Any]], at: str, reason: str | None = None, *, key: str = "at"
) -> dict[str, Any] | None:
    """The newest of ``reports`` by their ``at`` column: ``{key: when, "reason": …}`` (``None``: none has one)."""
    dated = [r for r in reports if r[at] is not None]
    if not dated:
        return None
    newest = max(dated, key=lambda r: r[at])
    return {key: newest[at], **({"reason": newest[reason]} if reason else {})}


def destination_state(reports: list[dict[str, Any]]) -> str:
    """``down``, ``failing``, ``up`` or ``unknown`` from the fresh reports of one destination."""
    if not reports:
        return "unknown"
    if any(r["breaker"] == "open" for r in reports):
        return "down"
    if any(r["failing_attempts"] > 0 for r in reports):
        return "failing"
    return "up"


async def destinations_overview(
    db: Database, routes: RouteTable, *, report_seconds: float, now: datetime | None = None
) -> list[dict[str, Any]]:
    """Every destination of ``routes`` (the bus itself aside) with its state and what it rests on."""
    now = now or datetime.now(UTC)
    stale_before = now - timedelta(seconds=STALE_AFTER_REPORTS * report_seconds)
    rows = await read_reports(db)
    waiting = await dead_letters_waiting(db)
    overview = []
    for destination in routes.destinations:
        if destination.name == LOCAL:
            continue
        mine = [_report(row) for row in rows if row.destination == destination.name]
        fresh = [r for r in mine if as_utc(r["reported_at"]) >= stale_before]
        stale = [r for r in mine if as_utc(r["reported_at"]) < stale_before]
        receipts_failing = _latest(fresh, "receipts_failing_since", "receipts_failure", key="since")
        overview.append(
            {
                "name": destination.name,
                "adapter": destination.adapter,
                "state": destination_state(fresh),
                "dead_letters_waiting": waiting.get(destination.name, 0),
                "in_flight": sum(r["in_flight"] for r in fresh),
                "last_success_at": (_latest(fresh, "last_success_at") or {}).get("at"),
                "last_failure": _latest(fresh, "last_failure_at", "last_failure"),
                "receipts_failing": receipts_failing,
                "workers": [_shown(r) for r in fresh],
                "stale_workers": [_shown(r) for r in stale],
            }
        )
    return [_iso(item) for item in overview]


def _report(row: Any) -> dict[str, Any]:
    report = {str(name): value for name, value in row._mapping.items()}  # plain str: orjson takes no subclass
    report["receipts_failing_since"] = report.pop("receipts_failure_at")
    return report


def _shown(report: dict[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in report.items() if k != "destination"}


def _iso(value: Any) -> Any:
    """Instants as ISO 8601 UTC strings, however the database handed them back."""
    if isinstance(value, datetime):
        return utc_iso(value)
    if isinstance(value, dict):
        return {k: _iso(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_iso(v) for v in value]
    return value


def render_overview(overview: list[dict[str, Any]]) -> str:
    """The overview as lines for a terminal: one per destination, then what is wrong with it, if anything."""
    if not overview:
        return "no destinations (no routes file, or it names none)"
    lines = []
    for item in overview:
        workers = len(item["workers"])
        lines.append(
            f"{item['name']:<24} {item['state']:<8} adapter {item['adapter']}, {workers} worker(s), "
            f"{item['in_flight']} in flight, {item['dead_letters_waiting']} dead letter(s) waiting, "
            f"last delivered {item['last_success_at'] or 'never (since the workers started)'}"
        )
        failure = item["last_failure"]
        if failure is not None and item["state"] != "up":
            lines.append(f"    failing since the last success, last at {failure['at']}: {failure['reason']}")
        receipts = item["receipts_failing"]
        if receipts is not None:
            lines.append(f"    receipts cannot be fetched since {receipts['since']}: {receipts['reason']}")
        if item["stale_workers"]:
            lines.append(f"    {len(item['stale_workers'])} worker(s) stopped reporting without saying so")
    return "\n".join(lines)
