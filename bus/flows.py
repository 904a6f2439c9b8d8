"""Flows: what became of the messages received in a time window, per sender and per destination.

An operator watching the bus wants to see, without reading timelines one by one, whether documents flow: how
many each agency sent, how many each destination has delivered, which are still in flight (and since when),
which were refused or went dead, how long delivery took, and whether anything waits to be published or resent.
Every process writes its events to the one database, so the report reads them there: it is the same whichever
gateway answers, which the per-process counters of ``/metrics`` are not.

The window selects messages by arrival. Message ids are ULIDs, so "received between A and B" is a range of the
primary key and needs no index on time; the events of those messages come through the ``(message_id, seq)``
index. A destination's state for a message is the type of the latest event recorded for that pair
(``FORWARDING``, ``RETRYING``, ``DELIVERED``, ``FAILED``, ``DEAD`` or ``RESENT``). Delivery times run from
arrival to the destination's acknowledgement (the DELIVERED event's ``at``); their percentiles are computed
over the newest ``max_latency_samples`` deliveries of the window; ``samples`` says how many they rest on.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

from sqlalchemy import and_, func, select
from sqlalchemy.ext.asyncio import AsyncConnection

from docbus.ids import first_id_at_or_after, last_id_before
from docbus.store.audit import as_utc, utc_iso
from docbus.store.database import Database
from docbus.store.tables import dead_letters, events, messages, outbox

# Event types that describe where a message stands with one destination.
DESTINATION_STATES = ("FORWARDING", "RETRYING", "DELIVERED", "FAILED", "DEAD", "RESENT")
IN_FLIGHT = frozenset({"FORWARDING", "RETRYING", "RESENT"})
MAX_WINDOW = timedelta(days=7)


@dataclass(frozen=True, slots=True)
class Window:
    """Messages received at or after ``since`` and before ``until``."""

    since: datetime
    until: datetime

    def __post_init__(self) -> None:
        if self.since.tzinfo is None or self.until.tzinfo is None:
            raise ValueError("window bounds must be aware datetimes")
        if self.until <= self.since:
            raise ValueError("the window must end after it starts")
        if self.until - self.since > MAX_WINDOW:
            raise ValueError(f"the window may span at most {MAX_WINDOW.days} days")

    @property
    def id_range(self) -> tuple[str, str]:
        return first_id_at_or_after(self.since), last_id_before(self.until)


def percentile(ordered: list[float], fraction: float) -> float:
    """Nearest-rank percentile of an ascending list (not empty)."""
    rank = max(1, math.ceil(fraction * len(ordered)))
    return ordered[rank - 1]


async def flow_report(
    db: Database, window: Window, *, sender: str | None = None, max_latency_samples: int = 100_000
) -> dict[str, Any]:
    """The report served at ``GET /v1/flows`` (see the module's docstring)."""
    low, high = window.id_range
    in_window = [messages.c.id >= low, messages.c.id <= high]
    if sender is not None:
        in_window.append(messages.c.sender == sender)
    async with db.reader.connect() as conn:
        senders = await _senders(conn, in_window)
        destinations = await _destinations(conn, in_window)
        latencies = await _latencies(conn, in_window, max_latency_samples)
        backlog = await _backlog(conn)
        waiting = await _dead_letters_waiting(conn)
    for (flow_sender, destination), samples in latencies.items():
        flow = destinations.setdefault((flow_sender, destination), _empty_flow(flow_sender, destination))
        ordered = sorted(samples)
        flow["delivery_ms"] = {
            "samples": len(ordered),
            "p50": round(percentile(ordered, 0.50), 1),
            "p99": round(percentile(ordered, 0.99), 1),
            "max": round(ordered[-1], 1),
        }
    return {
        "window": {"since": utc_iso(window.since), "until": utc_iso(window.until)},
        "sender": sender,
        "senders": [senders[key] for key in sorted(senders)],
        "destinations": [destinations[key] for key in sorted(destinations)],
        "outbox": backlog,
        "dead_letters_waiting": waiting,
    }


async def _senders(conn: AsyncConnection, in_window: list[Any]) -> dict[str, dict[str, Any]]:
    rows = await conn.execute(
        select(messages.c.sender, messages.c.status, func.count())
        .where(and_(*in_window))
        .group_by(messages.c.sender, messages.c.status)
    )
    found: dict[str, dict[str, Any]] = {}
    for organ, status, count in rows:
        entry = found.setdefault(organ, {"sender": organ, "received": 0, "by_status": {}})
        entry["received"] += count
        entry["by_status"][status] = count
    return found


def _empty_flow(sender: str, destination: str) -> dict[str, Any]:
    return {
        "sender": sender,
        "destination": destination,
        "messages": 0,
        "by_state": {},
        "oldest_in_flight_received_at": None,
        "delivery_ms": None,
    }


async def _destinations(conn: AsyncConnection, in_window: list[Any]) -> dict[tuple[str, str], dict[str, Any]]:
    later = events.alias("later")
    # The latest event per (message, destination): a correlated lookup through the (message_id, seq) index.
    latest_seq = (
        select(func.max(later.c.seq))
        .where(
            later.c.message_id == events.c.message_id,
            later.c.destination == events.c.destination,
            later.c.type.in_(DESTINATION_STATES),
        )
        .scalar_subquery()
    )
    per_pair = (
        select(
            messages.c.sender,
            events.c.destination,
            events.c.type,
            func.count().label("count"),
            func.min(messages.c.received_at).label("oldest"),
        )
        .select_from(messages.join(events, events.c.message_id == messages.c.id))
        .where(
            *in_window,
            events.c.destination.is_not(None),
            events.c.type.in_(DESTINATION_STATES),
            events.c.seq == latest_seq,
        )
        .group_by(messages.c.sender, events.c.destination, events.c.type)
    )
    flows: dict[tuple[str, str], dict[str, Any]] = {}
    for organ, destination, state, count, oldest in await conn.execute(per_pair):
        flow = flows.setdefault((organ, destination), _empty_flow(organ, destination))
        flow["messages"] += count
        flow["by_state"][state] = count
        if state in IN_FLIGHT and oldest is not None:
            earlier = flow["oldest_in_flight_received_at"]
            candidate = utc_iso(as_utc(oldest))
            flow["oldest_in_flight_received_at"] = min(earlier, candidate) if earlier else candidate
    return flows


async def _latencies(conn: AsyncConnection, in_window: list[Any], limit: int) -> dict[tuple[str, str], list[float]]:
    rows = await conn.execute(
        select(messages.c.sender, events.c.destination, messages.c.received_at, events.c.at)
        .select_from(messages.join(events, events.c.message_id == messages.c.id))
        .where(*in_window, events.c.type == "DELIVERED", events.c.destination.is_not(None))
        .order_by(messages.c.id.desc())
        .limit(limit)
    )
    samples: dict[tuple[str, str], list[float]] = {}
    for organ, destination, received_at, delivered_at in rows:
        elapsed = (as_utc(delivered_at) - as_utc(received_at)).total_seconds() * 1000
        samples.setdefault((organ, destination), []).append(elapsed)
    return samples


async def _backlog(conn: AsyncConnection) -> dict[str, Any]:
    count, oldest = (
        await conn.execute(select(func.count(), func.min(outbox.c.created_at)).where(outbox.c.published_at.is_(None)))
    ).one()
    return {"unpublished": count, "oldest_created_at": utc_iso(as_utc(oldest)) if oldest is not None else None}


async def _dead_letters_waiting(conn: AsyncConnection) -> list[dict[str, Any]]:
    rows = await conn.execute(
        select(dead_letters.c.destination, func.count(), func.min(dead_letters.c.created_at))
        .where(dead_letters.c.resent_at.is_(None))
        .group_by(dead_letters.c.destination)
        .order_by(dead_letters.c.destination)
    )
    return [
        {"destination": destination, "waiting": count, "oldest_created_at": utc_iso(as_utc(oldest))}
        for destination, count, oldest in rows
    ]


class BadWindow(ValueError):
    """A window bound that cannot be read; ``field`` names which (``since`` or ``until``)."""

    def __init__(self, field: str, message: str) -> None:
        super().__init__(message)
        self.field = field


_UNITS = {"s": "seconds", "m": "minutes", "h": "hours", "d": "days"}
_DURATION = re.compile(r"([1-9][0-9]{0,6})([smhd])")


def parse_duration(value: str) -> timedelta | None:
    """``15m``, ``2h``, ``1d``, ``30s`` as a duration; ``None`` when ``value`` is not one."""
    duration = _DURATION.fullmatch(value.strip())
    if duration is None:
        return None
    return timedelta(**{_UNITS[duration.group(2)]: int(duration.group(1))})


def parse_instant(field: str, value: str, now: datetime) -> datetime:
    """``15m``, ``2h``, ``1d`` (that long before ``now``) or an ISO 8601 instant (without an offset: UTC)."""
    duration = parse_duration(value)
    if duration is not None:
        return now - duration
    try:
        instant = datetime.fromisoformat(value.strip())
    except ValueError:
        raise BadWindow(field, f"{field} must be a duration such as 15m, 2h or 1d, or an ISO 8601 instant") from None
    return instant.replace(tzinfo=UTC) if instant.tzinfo is None else instant


def parse_window(since: str, until: str | None, now: datetime | None = None) -> Window:
    """The window ``since``..``until`` (default: now); :class:`BadWindow` says which bound is wrong and why."""
    now = now or datetime.now(UTC)
    end = parse_instant("until", until, now) if until else now
    start = parse_instant("since", since, end if until else now)
    try:
        return Window(start, end)
    except ValueError as exc:
        raise BadWindow("since", str(exc)) from None


def arrival_bounds(
    since: str | None, until: str | None, now: datetime | None = None
) -> tuple[datetime | None, datetime | None]:
    """Optional bounds of a message search (either may be absent, and the span is not capped); durations count
    back from now. :class:`BadWindow` when one cannot be read or ``until`` is not after ``since``."""
    now = now or datetime.now(UTC)
    start = parse_instant("since", since, now) if since else None
    end = parse_instant("until", until, now) if until else None
    if start is not None and end is not None and end <= start:
        raise BadWindow("until", "until must be later than since")
    return start, end


def render_report(report: dict[str, Any]) -> str:
    """The report as text for a terminal (``docbus flows``)."""
    window = report["window"]
    lines = [f"messages received {window['since']} .. {window['until']}", ""]
    lines.append(f"{'sender':<24}{'received':>10}  by status")
    for entry in report["senders"]:
        statuses = ", ".join(f"{status} {count}" for status, count in sorted(entry["by_status"].items()))
        lines.append(f"{entry['sender']:<24}{entry['received']:>10}  {statuses}")
    if not report["senders"]:
        lines.append("(none)")
    lines += ["", f"{'sender -> destination':<44}{'messages':>9}  states; oldest in flight; delivery ms p50/p99/max"]
    for flow in report["destinations"]:
        states = ", ".join(f"{state} {count}" for state, count in sorted(flow["by_state"].items()))
        pair = f"{flow['sender']} -> {flow['destination']}"
        timing = flow["delivery_ms"]
        delivery = f"{timing['p50']}/{timing['p99']}/{timing['max']}" if timing else "-"
        lines.append(
            f"{pair:<44}{flow['messages']:>9}  {states}; {flow['oldest_in_flight_received_at'] or '-'}; {delivery}"
        )
    if not report["destinations"]:
        lines.append("(none)")
    outbox = report["outbox"]
    lines += [
        "",
        f"outbox: {outbox['unpublished']} unpublished"
        + (f", oldest {outbox['oldest_created_at']}" if outbox["oldest_created_at"] else ""),
    ]
    waiting = report["dead_letters_waiting"]
    lines.append(
        "dead letters waiting: "
        + (", ".join(f"{d['destination']} {d['waiting']} (oldest {d['oldest_created_at']})" for d in waiting) or "none")
    )
    return "\n".join(lines)
