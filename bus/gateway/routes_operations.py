"""What operators use: routes, dead letters (list, show, resend), flows, destinations' health and the live event
stream."""

from __future__ import annotations

import asyncio
from collections import Counter
from collections.abc import AsyncIterator
from datetime import UTC, datetime
from typing import Annotated, Any

import orjson
from fastapi import APIRouter, Header, Query, Request
from sqlalchemy import select
from starlette.responses import Response, StreamingResponse
from starlette.types import Receive, Scope, Send

from docbus.delivery.dead_letters import DeadLetterStore, check_destination
from docbus.destinations import destinations_overview
from docbus.errors import Forbidden, TooManyRequests
from docbus.flows import BadWindow, flow_report, parse_window
from docbus.gateway.deps import Caller, State, bad_query
from docbus.runtime import BusRuntime
from docbus.store.agencies import Agency, Role
from docbus.store.audit import as_utc
from docbus.store.messages import EVENT_SETTLE, events_after, published_event, settled_prefix
from docbus.store.tables import events

router = APIRouter(prefix="/v1", tags=["operations"])
SINCE_HELP = "window start: a duration back from `until` (15m, 2h, 1d) or an ISO 8601 instant"
UNTIL_HELP = "window end: a duration back from now, or an ISO 8601 instant; default now"


def _stream_slots(request: Request, state: BusRuntime) -> StreamSlots:
    slots: StreamSlots | None = getattr(request.app.state, "event_stream_slots", None)
    if slots is None:
        slots = request.app.state.event_stream_slots = StreamSlots(state.settings.event_streams_per_caller)
    return slots


def _operator(caller: Agency) -> None:
    if caller.role is not Role.OPERATOR:
        raise Forbidden("only operator credentials may do this")


@router.get("/routes")
async def show_routes(state: State, caller: Caller) -> Response:
    """The routing rules in force: destinations, ordered rules, per-agency overrides."""
    return Response(orjson.dumps(state.routes.as_dict()), media_type="application/json")


@router.get("/dead-letters")
async def list_dead_letters(
    state: State, caller: Caller, destination: str | None = None, limit: Annotated[int, Query(ge=1, le=500)] = 100
) -> Response:
    """Messages a destination gave up on, newest first (operators only)."""
    _operator(caller)
    letters = await DeadLetterStore(state.db, state.broker, state.topics).list(destination=destination, limit=limit)
    return Response(orjson.dumps({"items": [d.as_dict() for d in letters]}), media_type="application/json")


@router.get("/dead-letters/{dead_id}")
async def show_dead_letter(dead_id: int, state: State, caller: Caller) -> Response:
    _operator(caller)
    letter = await DeadLetterStore(state.db, state.broker, state.topics).get(dead_id)
    return Response(orjson.dumps(letter.as_dict()), media_type="application/json")


@router.post("/dead-letters/resend", status_code=202)
async def resend_dead_letters(
    state: State,
    caller: Caller,
    destination: Annotated[str, Query(description="the destination whose waiting dead letters go back")],
    limit: Annotated[int, Query(ge=1, le=10_000, description="the most dead letters put back by this call")] = 1000,
    dry_run: Annotated[bool, Query(description="only count and list what would be put back")] = False,
) -> Response:
    """Put back every dead letter of a destination still waiting, oldest first (operators only), e.g. after an
    outage that outlasted the retry policy. Each keeps its message id and history. Letters whose payload is gone
    are listed in `refused` and stay waiting; `remaining` tells how many still wait (call again past `limit`).
    409 while another bulk resend of the destination runs."""
    _operator(caller)
    check_destination(destination, [d.name for d in state.routes.destinations])
    outcome = await DeadLetterStore(state.db, state.broker, state.topics).resend_waiting(
        destination, actor=caller.organ_id, limit=limit, dry_run=dry_run
    )
    return Response(orjson.dumps(outcome.as_dict()), status_code=200 if dry_run else 202, media_type="application/json")


@router.post("/dead-letters/{dead_id}/resend", status_code=202)
async def resend_dead_letter(dead_id: int, state: State, caller: Caller) -> Response:
    """Put a dead letter back in front of its destination; it keeps its message id and its history."""
    _operator(caller)
    letter = await DeadLetterStore(state.db, state.broker, state.topics).resend(dead_id, actor=caller.organ_id)
    return Response(orjson.dumps(letter.as_dict()), status_code=202, media_type="application/json")


@router.get("/flows")
async def show_flows(
    state: State,
    caller: Caller,
    since: Annotated[str, Query(description=SINCE_HELP)] = "1h",
    until: Annotated[str | None, Query(description=UNTIL_HELP)] = None,
    sender: str | None = None,
) -> Response:
    """What became of the messages received in a window (at most 7 days), per sender and per destination:
    counts by status and by destination state, the oldest still in flight, delivery times, and what waits in
    the outbox or among the dead letters (operators only). Read from the database every process writes to."""
    _operator(caller)
    try:
        window = parse_window(since, until)
    except BadWindow as exc:
        raise bad_query(exc.field, str(exc)) from None
    report = await flow_report(state.db, window, sender=sender)
    return Response(orjson.dumps(report), media_type="application/json")


@router.get("/destinations")
async def show_destinations(state: State, caller: Caller) -> Response:
    """How each destination of the routes fares now, as the workers forwarding to it report every few seconds:
    `up`, `failing` (retries under way), `down` (a circuit breaker holds deliveries back) or `unknown` (no
    recent report), with the latest success and failure and its reason, whether receipts can be fetched, the
    deliveries in flight, the dead letters waiting, and each worker's report (operators only)."""
    _operator(caller)
    overview = await destinations_overview(state.db, state.routes, report_seconds=state.settings.health_report_seconds)
    return Response(orjson.dumps({"destinations": overview}), media_type="application/json")


@router.get("/events")
async def event_stream(
    request: Request,
    state: State,
    caller: Caller,
    last_event_id: Annotated[str | None, Header()] = None,
    since: Annotated[int | None, Query(description="resume after this event id (or send Last-Event-ID)")] = None,
) -> StreamingResponse:
    """Server-sent events: every lifecycle event the caller may see (its own messages; operators: all).

    The stream tails the events table, so it shows what every gateway and worker recorded, and resumes
    where it left off from ``Last-Event-ID``. On PostgreSQL an event is sent once it was written two seconds
    ago, so that none is skipped while an earlier one's transaction is still open.
    """
    slots = _stream_slots(request, state)
    slots.check(caller.organ_id)  # refused before any work; the slot is taken just before answering
    cursor = since if since is not None else int(last_event_id) if last_event_id and last_event_id.isdigit() else None
    if cursor is None:
        async with state.db.reader.connect() as conn:
            cursor = int(await conn.scalar(select(events.c.id).order_by(events.c.id.desc()).limit(1)) or 0)
    everything = caller.role is Role.OPERATOR
    me = f'"{caller.organ_id}"'
    settle = not state.db.is_sqlite

    async def stream() -> AsyncIterator[bytes]:
        position = cursor
        yield b": docbus event stream\n\n"
        idle = 0.0
        while not await request.is_disconnected():
            query = events_after(position).limit(500)
            async with state.db.reader.connect() as conn:
                rows = (await conn.execute(query)).all()
            if settle:
                rows = settled_prefix(rows, lambda row: as_utc(row.recorded_at), datetime.now(UTC) - EVENT_SETTLE)
            for row in rows:
                position = row.id
                if not (everything or row.sender == caller.organ_id or me in row.receivers):
                    continue
                data = published_event(row)
                yield f"id: {row.id}\nevent: {row.type}\ndata: ".encode() + orjson.dumps(data) + b"\n\n"
            if rows:
                idle = 0.0
                continue
            await asyncio.sleep(0.25)
            idle += 0.25
            if idle >= 15:
                idle = 0.0
                yield b": keep-alive\n\n"

    slots.take(caller.organ_id)  # given back by the response, however it ends
    return _HeldStream(
        slots,
        caller.organ_id,
        stream(),
        media_type="text/event-stream",
        headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no"},
    )


class StreamSlots:
    """How many event streams each credential holds open in this process, up to a limit.

    Every stream polls the database four times a second while idle, so an agency system that opens streams in a
    loop (a reconnect bug, or on purpose) would load the one database every gateway and worker shares. Past the
    limit a new stream is refused with 429 until one of the caller's streams closes."""

    def __init__(self, limit: int) -> None:
        self.limit = limit
        self._held: Counter[str] = Counter()

    def check(self, organ_id: str) -> None:
        if self._held[organ_id] >= self.limit:
            raise TooManyRequests(
                f"{organ_id} already holds {self.limit} open event streams on this gateway; close one first"
            )

    def take(self, organ_id: str) -> None:
        self.check(organ_id)
        self._held[organ_id] += 1

    def give_back(self, organ_id: str) -> None:
        self._held[organ_id] -= 1
        if self._held[organ_id] <= 0:
            del self._held[organ_id]


class _HeldStream(StreamingResponse):
    """A streaming response that gives its slot back however it ends (finished, failed, client gone)."""

    def __init__(self, slots: StreamSlots, organ_id: str, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._slots, self._organ_id = slots, organ_id

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        try:
            await super().__call__(scope, receive, send)
        finally:
            self._slots.give_back(self._organ_id)
