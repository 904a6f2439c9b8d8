"""Reading a request body under a size cap, a memory budget and deadlines, before anything parses it.

The cap is checked against Content-Length up front and again on every chunk, so a client that lies about the
length, or streams without one, is cut off as soon as it crosses the cap; nothing oversized is ever buffered whole.

A gateway also meets clients that are slow or gone rather than large:

- a body that stops arriving for ``idle_seconds``, or is still arriving ``deadline_seconds`` after it started,
  is refused with 408: one that trickles a byte now and then would otherwise hold its connection, and what it
  has sent so far, for as long as it likes;
- a client that disconnects half-way is a refusal like the others (499, counted), not an application crash with
  a traceback in the log;
- the bodies one process holds at once share a memory budget (:class:`BodyBudget`): the bytes are charged as
  they arrive and given back when the request is done, and a body that would pass the budget is refused with
  503 and Retry-After. Charging what arrived, not what Content-Length announces, means a client that announces
  64 MB and sends nothing holds nothing.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass

from starlette.requests import ClientDisconnect, Request

from docbus.errors import ClientClosedRequest, GatewayBusy, NotWellFormed, PayloadTooLarge, RequestTimeout
from docbus.metrics import BODY_BYTES_HELD

DEFAULT_IDLE_SECONDS = 30.0
DEFAULT_DEADLINE_SECONDS = 600.0


@dataclass(frozen=True, slots=True)
class BodyLimits:
    """How large a body may be and how long it may take to arrive."""

    max_bytes: int
    idle_seconds: float = DEFAULT_IDLE_SECONDS
    deadline_seconds: float = DEFAULT_DEADLINE_SECONDS


class BodyBudget:
    """The bytes of request bodies one process holds at once, and the most it may hold.

    One event loop runs every request of a process, so plain arithmetic is enough: nothing else runs between a
    check and the charge that follows it."""

    def __init__(self, limit: int) -> None:
        self.limit = limit
        self.held = 0

    def reading(self, request: Request, limits: BodyLimits) -> _Reading:
        """``async with budget.reading(request, limits) as body``: the body of ``request``, charged to this budget
        until the block ends."""
        return _Reading(self, request, limits)

    def _refuse_over(self, more: int) -> None:
        if self.held + more > self.limit:
            raise GatewayBusy(
                f"this gateway process holds {self.held} bytes of request bodies and may hold {self.limit}; "
                "retry shortly"
            )


class _Reading:
    """The context of :meth:`BodyBudget.reading` (a class: intake enters one per request, and a generator-based
    context manager costs several times as much)."""

    __slots__ = ("charge", "limits", "request")

    def __init__(self, budget: BodyBudget, request: Request, limits: BodyLimits) -> None:
        self.charge = _Charge(budget)
        self.request = request
        self.limits = limits

    async def __aenter__(self) -> bytes:
        try:
            return await _read(self.request, self.limits, self.charge)
        except BaseException:
            self.charge.give_back()
            raise

    async def __aexit__(self, *exc_info: object) -> None:
        self.charge.give_back()


class _Charge:
    """What one request has charged to a budget so far."""

    __slots__ = ("budget", "bytes")

    def __init__(self, budget: BodyBudget) -> None:
        self.budget = budget
        self.bytes = 0

    def add(self, size: int) -> None:
        self.budget._refuse_over(size)
        self.budget.held += size
        self.bytes += size
        BODY_BYTES_HELD.inc(size)

    def give_back(self) -> None:
        if self.bytes:
            self.budget.held -= self.bytes
            BODY_BYTES_HELD.dec(self.bytes)
            self.bytes = 0


async def read_capped_body(request: Request, cap: int) -> bytes:
    """The body of ``request`` under ``cap`` and the default deadlines, with no budget (the simulators)."""
    return await _read(request, BodyLimits(cap), None)


async def _read(request: Request, limits: BodyLimits, charge: _Charge | None) -> bytes:
    cap = limits.max_bytes
    declared = request.headers.get("content-length")
    if declared is not None:
        try:
            length = int(declared)
        except ValueError as exc:
            raise NotWellFormed("Content-Length is not a number") from exc
        if length > cap:
            raise PayloadTooLarge(f"the body is {length} bytes; this bus accepts at most {cap} bytes")
        if charge is not None:
            charge.budget._refuse_over(length)  # would not fit even now: say so before reading any of it
    chunks: list[bytes] = []
    total = 0
    loop = asyncio.get_running_loop()
    deadline = loop.time() + limits.deadline_seconds
    receive = request.receive  # read directly: Starlette's stream() is a generator and a step per chunk
    try:
        async with asyncio.timeout(min(loop.time() + limits.idle_seconds, deadline)) as timer:
            while True:
                message = await receive()
                if message["type"] == "http.disconnect":
                    raise ClientDisconnect()
                chunk = message.get("body", b"")
                total += len(chunk)
                if total > cap:
                    raise PayloadTooLarge(f"the body exceeds the limit of {cap} bytes")
                if charge is not None:
                    charge.add(len(chunk))
                chunks.append(chunk)
                if not message.get("more_body", False):
                    break
                timer.reschedule(min(loop.time() + limits.idle_seconds, deadline))
    except TimeoutError as exc:
        if loop.time() >= deadline:
            raise RequestTimeout(
                f"the body was still arriving {limits.deadline_seconds:g} s after it started ({total} bytes so far)"
            ) from exc
        raise RequestTimeout(
            f"nothing of the body arrived for {limits.idle_seconds:g} s ({total} bytes so far)"
        ) from exc
    except ClientDisconnect as exc:
        raise ClientClosedRequest(f"the client disconnected after sending {total} bytes of its body") from exc
    return chunks[0] if len(chunks) == 1 else b"".join(chunks)
