"""What both axis simulators share: settings, the in-memory axis, fault injection, inspection routes, serving.

An :class:`AxisState` is one axis as seen by one registered system (docbus): it keeps every packet the system
sent (deduplicated by idempotency key, duplicates counted), and, for every document, schedules the business
receipts its receivers "send back" — status 01 → 03 → 06 per receiver (or 02 for receivers the faults say
refuse) — which become visible to the system's received list once their time has come and leave it when the
system acknowledges them ``done`` / ``fail``.

Test and operator routes (no authentication; simulators listen on loopback)::

    GET    /_sim/received     packets the system sent: DocId, messagetype, sender, receivers, idempotency key,
                              number of duplicate submissions, sha256
    GET    /_sim/receipts     receipts issued (also those not yet due) and their transport status
    GET    /_sim/faults       the faults in force
    POST   /_sim/faults       replace them: {"latency_ms", "error_rate", "down", "refuse_with_02",
                              "refuse_reason", "permanent_error_code"}
    DELETE /_sim/faults       clear them
    POST   /_sim/reset        forget everything received and issued
"""

from __future__ import annotations

import asyncio
import hashlib
import heapq
import os
import random
import ssl
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Iterable
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, NamedTuple

import orjson
import uvicorn
from fastapi import APIRouter, FastAPI, Request
from pydantic import BaseModel, ConfigDict, Field, field_validator
from starlette.responses import Response
from starlette.types import ASGIApp, Receive, Scope, Send

from docbus.errors import NotWellFormed, PayloadTooLarge, RequestRejected
from docbus.gateway.body import read_capped_body
from docbus.heap import settle_heap
from docbus.simulators.receipts import PacketHeader, Party, UnreadablePacket, read_header, status_message
from docbus.simulators.shelf import Shelf

RECEIPT_CODES = ("01", "03", "06")
FINISHED = ("done", "fail")  # transport statuses that take a receipt off the received list

# Error codes shared by the axes (see docbus.connectors.provincial_axis for their meanings).
INVALID_FILE = 10
BAD_CREDENTIALS = 15
UNKNOWN_RECIPIENT = 18
INTERNAL_ERROR = 20
FILE_ERROR = 21
NOT_EDXML = 22


@dataclass(frozen=True, slots=True)
class SimulatorConfig:
    """How a simulator behaves: the one system it knows, and when receipts come back."""

    system_id: str = "docbus"
    secret: str = "docbus-secret"  # noqa: S105 - a simulator's documented default
    # Seconds after a document arrives at which each receiver's 01, 03 and 06 become visible.
    receipt_delays: tuple[float, float, float] = (0.2, 0.5, 1.0)
    token_ttl: float = 3600.0  # provincial axis: lifetime of a login token
    timestamp_skew: float = 300.0  # national axis: how far a signed timestamp may be from the clock
    max_body_bytes: int = 50 * 1024 * 1024
    seed: int | None = None  # of the error-rate dice
    # How many packets it remembers, with their receipts; the oldest are forgotten first. A simulator keeps what
    # it is sent in memory (a 10 KB document to three receivers takes about 14.5 KB with its receipts), and a
    # soak run must not make it grow without end.
    keep_packets: int = 50_000

    def __post_init__(self) -> None:
        delays = self.receipt_delays
        if len(delays) != len(RECEIPT_CODES) or any(d < 0 for d in delays) or list(delays) != sorted(delays):
            raise ValueError("receipt_delays must be three non-negative, non-decreasing numbers of seconds")
        if self.keep_packets < 1:
            raise ValueError("keep_packets must be at least 1")


class Faults(BaseModel):
    """Faults in force (``POST /_sim/faults``); the defaults are a healthy axis."""

    model_config = ConfigDict(extra="forbid")

    latency_ms: int = Field(0, ge=0, le=120_000)
    error_rate: float = Field(0.0, ge=0.0, le=1.0)  # share of calls answered 5xx / ErrorCode 20
    down: bool = False  # answer 503 to every axis call
    refuse_with_02: list[str] = Field(default_factory=list)  # receiver organ ids, or "*": they refuse (02)
    refuse_reason: str = "Không đúng thẩm quyền tiếp nhận (simulated refusal)"
    permanent_error_code: int | None = Field(None, ge=1)  # answer every sendEdoc with this error code

    @field_validator("refuse_with_02", mode="before")
    @classmethod
    def _one_or_many(cls, value: Any) -> Any:
        return [value] if isinstance(value, str) else value

    def refuses(self, organ_id: str) -> bool:
        return "*" in self.refuse_with_02 or organ_id in self.refuse_with_02


def new_doc_id() -> str:
    """A random (version 4) UUID as text, the form of the axes' DocIds: what ``str(uuid.uuid4())`` gives, without
    building a UUID object for each of a document's four ids (its own and its receipts')."""
    raw = bytearray(os.urandom(16))
    raw[6] = raw[6] & 0x0F | 0x40
    raw[8] = raw[8] & 0x3F | 0x80
    x = raw.hex()
    return f"{x[:8]}-{x[8:12]}-{x[12:16]}-{x[16:20]}-{x[20:]}"


class AxisAnswer(Response):
    """A JSON answer rendered by orjson: the same compact UTF-8 bytes as Starlette's ``JSONResponse`` (which a
    test checks), in a fraction of its time."""

    media_type = "application/json"

    def render(self, content: Any) -> bytes:
        return orjson.dumps(content)


class Refusal(Exception):
    """Raised by the axis state when it will not take a packet; rendered as a FAIL answer."""

    def __init__(self, code: int, description: str, http_status: int = 400) -> None:
        super().__init__(f"{code}: {description}")
        self.code = code
        self.description = description
        self.http_status = http_status


# Room for a multipart form's boundaries and part headers around a file of the largest size taken.
FORM_FRAMING_BYTES = 64 * 1024


async def capped_body(request: Request, cap: int) -> bytes:
    """The request body, refused (413) as soon as its declared or streamed size passes ``cap``: an axis must not
    buffer whatever a client sends before judging its size."""
    try:
        return await read_capped_body(request, cap)
    except PayloadTooLarge:
        raise Refusal(FILE_ERROR, f"file too large: this axis takes at most {cap} bytes", http_status=413) from None
    except NotWellFormed as exc:
        raise Refusal(INVALID_FILE, exc.detail) from None
    except RequestRejected as exc:  # a body too slow to arrive (408), or a client gone half-way
        raise Refusal(INVALID_FILE, exc.detail, http_status=exc.status) from None


class ReceivedPacket(NamedTuple):
    """A packet the system sent to the axis (a tuple: see :class:`AxisState` on the collector)."""

    doc_id: str
    messagetype: str
    header: PacketHeader
    idempotency_key: str | None
    content: bytes
    received_at: datetime

    def row(self) -> tuple[Any, ...]:
        """The packet as a plain tuple (see ``docbus.simulators.shelf``)."""
        return (self.doc_id, self.messagetype, self.header.row(), self.idempotency_key, self.content, self.received_at)

    @classmethod
    def from_row(cls, row: tuple[Any, ...]) -> ReceivedPacket:
        return cls(row[0], row[1], PacketHeader.from_row(row[2]), row[3], row[4], row[5])

    def summary(self, duplicates: int) -> dict[str, Any]:
        return {
            "DocId": self.doc_id,
            "messagetype": self.messagetype,
            "sender": self.header.sender.organ_id,
            "receivers": [party.organ_id for party in self.header.receivers],
            "document_id": self.header.document_id,
            "idempotency_key": self.idempotency_key,
            "duplicates": duplicates,
            "sha256": hashlib.sha256(self.content).hexdigest(),
            "size": len(self.content),
            "received_at": self.received_at.isoformat(),
        }


class Receipt(NamedTuple):
    """A status message issued by one receiver for the system, visible from ``due`` (epoch seconds) on.

    What changes about a receipt (its transport status, its packet once written) is kept by :class:`AxisState`;
    the receipt itself is an immutable tuple (see there on the collector)."""

    doc_id: str
    reporter: Party  # the receiver organ reporting, as the document named it
    original: PacketHeader  # the document it is about
    status_code: str
    answers: str  # DocId of the document it is about
    due: float
    sequence: int
    description: str | None = None  # the refusal's reason (02); others get the code's standard description

    @property
    def sender(self) -> str:
        return self.reporter.organ_id

    @property
    def receiver(self) -> str:
        return self.original.sender.organ_id

    def packet(self) -> bytes:
        """The edXML status message."""
        return status_message(
            reporter=self.reporter,
            original=self.original,
            status_code=self.status_code,
            at=datetime.fromtimestamp(self.due, UTC),
            description=self.description,
        )

    def summary(self, now: float, transport_status: str) -> dict[str, Any]:
        return {
            "DocId": self.doc_id,
            "from": self.sender,
            "to": self.receiver,
            "StatusCode": self.status_code,
            "answers": self.answers,
            "due": datetime.fromtimestamp(self.due, UTC).isoformat(),
            "available": self.due <= now,
            "transport_status": transport_status,
        }


@dataclass
class AxisState:
    """One axis in memory, as one registered system sees it.

    It keeps what it was sent (up to ``keep_packets`` packets, the oldest forgotten first), on shelves the garbage
    collector does not walk (``docbus.simulators.shelf``); what changes is kept beside them in dictionaries of
    strings: transport statuses, duplicate counts, receipt packets once written. Receipts wait in a heap ordered by
    when they are due, so the received list costs what is due, not everything ever scheduled.
    """

    config: SimulatorConfig
    clock: Callable[[], float] = time.time
    faults: Faults = field(default_factory=Faults)
    received: Shelf[ReceivedPacket] = field(init=False)  # by DocId
    receipts: Shelf[Receipt] = field(init=False)  # by DocId
    dice: random.Random = field(init=False, repr=False)  # decides which calls error_rate fails
    _by_key: dict[str, str] = field(default_factory=dict, init=False, repr=False)  # idempotency key -> DocId
    _duplicates: dict[str, int] = field(default_factory=dict, init=False, repr=False)  # DocId -> repeats
    # Receipt DocId -> pending | processing | done | fail; absent means pending.
    _transport: dict[str, str] = field(default_factory=dict, init=False, repr=False)
    # Receipt DocId -> its packet: written when first asked for, not when the document arrives (a document
    # schedules three receipts per receiver, and writing them all up front cost the simulator more than taking
    # the document, CPU it then took from the bus it stands beside when both run on one machine).
    _packets: dict[str, bytes] = field(default_factory=dict, init=False, repr=False)
    _scheduled: list[tuple[float, int, str]] = field(default_factory=list, init=False, repr=False)  # a heap
    # DocId -> the DocIds of the receipts it scheduled, for forgetting both together.
    _receipts_of: dict[str, tuple[str, ...]] = field(default_factory=dict, init=False, repr=False)
    _due: dict[str, tuple[float, int]] = field(default_factory=dict, init=False, repr=False)  # due, not finished
    _sequence: int = field(default=0, init=False, repr=False)

    def __post_init__(self) -> None:
        self.dice = random.Random(self.config.seed)
        self.received = Shelf(ReceivedPacket.row, ReceivedPacket.from_row)
        self.receipts = Shelf(self._receipt_row, self._receipt_from_row)

    @staticmethod
    def _receipt_row(receipt: Receipt) -> tuple[Any, ...]:
        # The document's header is on the received shelf already: a receipt names it by DocId, and its reporter
        # by position among the document's receivers, instead of a copy of both for every receipt.
        reporter = receipt.original.receivers.index(receipt.reporter)
        return (
            receipt.doc_id,
            reporter,
            receipt.status_code,
            receipt.answers,
            receipt.due,
            receipt.sequence,
            receipt.description,
        )

    def _receipt_from_row(self, row: tuple[Any, ...]) -> Receipt:
        header = self.received[row[3]].header
        return Receipt(row[0], header.receivers[row[1]], header, row[2], row[3], row[4], row[5], row[6])

    def accept(
        self, raw: bytes, messagetype: str, idempotency_key: str | None, *, expected_sender: str | None = None
    ) -> tuple[ReceivedPacket, bool]:
        """Take a packet (or recognise a repeated one); returns it and whether it was a duplicate.

        ``expected_sender``: the sending organ the request declared; it must be the packet's From/OrganId.
        """
        if idempotency_key and idempotency_key in self._by_key:
            known = self.received[self._by_key[idempotency_key]]
            self._duplicates[known.doc_id] = self._duplicates.get(known.doc_id, 0) + 1
            return known, True
        if messagetype not in ("edoc", "status"):
            raise Refusal(INVALID_FILE, f"messagetype must be edoc or status, not {messagetype!r}")
        if not raw:
            raise Refusal(FILE_ERROR, "empty file")
        if len(raw) > self.config.max_body_bytes:
            raise Refusal(FILE_ERROR, "file too large", http_status=413)
        try:
            header = read_header(raw)
        except UnreadablePacket as exc:
            raise Refusal(NOT_EDXML, f"edXML not in the required format: {exc}") from exc
        if expected_sender is not None and header.sender.organ_id != expected_sender:
            raise Refusal(INVALID_FILE, f"declared sender {expected_sender!r} is not the packet's From/OrganId")
        if header.is_status != (messagetype == "status"):
            raise Refusal(NOT_EDXML, f"messagetype {messagetype} does not match the packet")
        if not header.receivers:
            raise Refusal(UNKNOWN_RECIPIENT, "the packet names no recipient")
        packet = ReceivedPacket(
            doc_id=new_doc_id(),
            messagetype=messagetype,
            header=header,
            idempotency_key=idempotency_key,
            content=raw,
            received_at=datetime.fromtimestamp(self.clock(), UTC),
        )
        self.received[packet.doc_id] = packet
        if idempotency_key:
            self._by_key[idempotency_key] = packet.doc_id
        if not header.is_status:
            self._schedule_receipts(packet)
        while len(self.received) > self.config.keep_packets:
            self._forget(self.received.oldest())
        return packet, False

    def _forget(self, doc_id: str | None) -> None:
        """Drop a packet and its receipts as if never received (past the ``keep_packets`` limit): its
        idempotency key and receipts go with it; a due receipt left in the heap is skipped when it comes up."""
        packet = self.received.get(doc_id) if doc_id is not None else None
        if packet is None:
            return
        if packet.idempotency_key and self._by_key.get(packet.idempotency_key) == doc_id:
            del self._by_key[packet.idempotency_key]
        self._duplicates.pop(packet.doc_id, None)
        for receipt_id in self._receipts_of.pop(packet.doc_id, ()):
            self.receipts.discard(receipt_id)
            self._transport.pop(receipt_id, None)
            self._packets.pop(receipt_id, None)
            self._due.pop(receipt_id, None)
        self.received.discard(packet.doc_id)  # last: a receipt is rebuilt from its document's header

    def waiting(self) -> list[Receipt]:
        """Receipts due and not yet acknowledged done / fail, oldest first."""
        now = self.clock()
        while self._scheduled and self._scheduled[0][0] <= now:
            due, sequence, doc_id = heapq.heappop(self._scheduled)
            if doc_id in self.receipts and self._transport.get(doc_id, "pending") not in FINISHED:
                self._due[doc_id] = (due, sequence)
        ordered = sorted(self._due.items(), key=lambda item: item[1])
        return [self.receipts[doc_id] for doc_id, _ in ordered]

    def receipt(self, doc_id: str) -> Receipt | None:
        """A due receipt by DocId (``None`` if unknown or not yet due)."""
        found = self.receipts.get(doc_id)
        return found if found is not None and found.due <= self.clock() else None

    def reset(self) -> None:
        self.received.clear()
        self.receipts.clear()
        self._scheduled.clear()
        self._due.clear()
        self._by_key.clear()
        self._duplicates.clear()
        self._transport.clear()
        self._packets.clear()
        self._receipts_of.clear()

    def duplicates(self, packet: ReceivedPacket) -> int:
        """How many times the system sent ``packet`` again (same idempotency key)."""
        return self._duplicates.get(packet.doc_id, 0)

    def transport_status(self, receipt: Receipt) -> str:
        """pending | processing | done | fail: what the system last acknowledged for ``receipt``."""
        return self._transport.get(receipt.doc_id, "pending")

    def set_transport_status(self, receipt: Receipt, status: str) -> None:
        self._transport[receipt.doc_id] = status
        if status in FINISHED:
            self._due.pop(receipt.doc_id, None)
        elif receipt.due <= self.clock():
            self._due[receipt.doc_id] = (receipt.due, receipt.sequence)

    def receipt_packet(self, receipt: Receipt) -> bytes:
        """The receipt's edXML status message, written once, on first use."""
        packet = self._packets.get(receipt.doc_id)
        if packet is None:
            packet = self._packets[receipt.doc_id] = receipt.packet()
        return packet

    def _schedule_receipts(self, packet: ReceivedPacket) -> None:
        arrived = self.clock()
        delays = self.config.receipt_delays
        scheduled: list[str] = []
        for receiver in packet.header.receivers:
            plan: list[tuple[str, float, str | None]]
            if self.faults.refuses(receiver.organ_id):
                plan = [("02", delays[0], f"Từ chối tiếp nhận: {self.faults.refuse_reason}")]
            else:
                plan = [(code, delay, None) for code, delay in zip(RECEIPT_CODES, delays, strict=True)]
            for code, delay, description in plan:
                self._sequence += 1
                receipt = Receipt(
                    doc_id=new_doc_id(),
                    reporter=receiver,
                    original=packet.header,
                    status_code=code,
                    answers=packet.doc_id,
                    due=arrived + delay,
                    sequence=self._sequence,
                    description=description,
                )
                self.receipts[receipt.doc_id] = receipt
                scheduled.append(receipt.doc_id)
                heapq.heappush(self._scheduled, (receipt.due, receipt.sequence, receipt.doc_id))
        self._receipts_of[packet.doc_id] = tuple(scheduled)


async def json_object(request: Request) -> dict[str, Any]:
    """The request's JSON object body; :class:`Refusal` (invalid file) if it is not one."""
    try:
        body = await request.json()
    except ValueError as exc:
        raise Refusal(INVALID_FILE, "body is not JSON") from exc
    if not isinstance(body, dict):
        raise Refusal(INVALID_FILE, "body is not a JSON object")
    return body


def requested_receipt(state: AxisState, doc_id: Any, *, http_status: int = 400) -> Receipt:
    """The due receipt a request names by ``doc_id``; :class:`Refusal` (file error) if there is none."""
    receipt = state.receipt(doc_id) if isinstance(doc_id, str) else None
    if receipt is None:
        raise Refusal(FILE_ERROR, f"no document {doc_id!r} for this system", http_status=http_status)
    return receipt


FailureBody = Callable[[int, str], dict[str, Any]]
# An axis' ``POST /{operation}`` endpoint: the operation's name and the request in, the answer out.
OperationEndpoint = Callable[[str, Request], Awaitable[Response]]


class FaultInjection:
    """ASGI middleware applying the faults in force to every axis call (never to ``/_sim``).

    It also serves the axis' operations itself, straight after the faults (``direct``: operation name ->
    the endpoint that the app's ``POST /{operation}`` route runs), not through FastAPI's routing, exception
    middleware and dependency solving. A simulator stands in for a remote system but shares the machine with the
    bus in the forwarding benchmark; that framework overhead was about a quarter of its CPU per document. It sits
    in front of the whole app (:class:`AxisApp`), not inside FastAPI's middleware stack: with the answers rendered
    by orjson and cheaper DocIds, that took a ``sendEdoc`` from 0.43-0.52 to 0.35-0.44 ms of CPU (wrk at 16
    connections against the simulator alone, alternating 15 s runs)."""

    def __init__(
        self,
        app: ASGIApp,
        state: AxisState,
        failure_body: FailureBody,
        direct: dict[str, OperationEndpoint] | None = None,
    ) -> None:
        self.app = app
        self.state = state
        self.failure_body = failure_body
        self.direct = direct if direct is not None else {}

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or str(scope["path"]).startswith("/_sim"):
            await self.app(scope, receive, send)
            return
        faults = self.state.faults
        if faults.down:
            down = AxisAnswer(self.failure_body(INTERNAL_ERROR, "axis is down (simulated)"), status_code=503)
            await down(scope, receive, send)
            return
        if faults.latency_ms:
            await asyncio.sleep(faults.latency_ms / 1000)
        if faults.error_rate and self.state.dice.random() < faults.error_rate:
            failed = AxisAnswer(self.failure_body(INTERNAL_ERROR, "internal error (simulated)"), status_code=500)
            await failed(scope, receive, send)
            return
        operation = str(scope["path"])[1:]
        endpoint = self.direct.get(operation) if scope["method"] == "POST" else None
        if endpoint is None:
            await self.app(scope, receive, send)
            return
        response = await endpoint(operation, Request(scope, receive))
        await response(scope, receive, send)


def inspection_router(state: AxisState) -> APIRouter:
    """The ``/_sim`` routes: what was received, which receipts were issued, the faults in force."""
    router = APIRouter(prefix="/_sim", tags=["simulator"])

    @router.get("/received")
    async def received() -> dict[str, Any]:
        return {"received": [packet.summary(state.duplicates(packet)) for packet in state.received.values()]}

    @router.get("/receipts")
    async def receipts() -> dict[str, Any]:
        now = state.clock()
        ordered = sorted(state.receipts.values(), key=lambda r: (r.due, r.sequence))
        return {"receipts": [receipt.summary(now, state.transport_status(receipt)) for receipt in ordered]}

    @router.get("/faults")
    async def faults() -> Faults:
        return state.faults

    @router.post("/faults")
    async def set_faults(faults: Faults) -> Faults:
        state.faults = faults
        return faults

    @router.delete("/faults")
    async def clear_faults() -> Faults:
        state.faults = Faults()
        return state.faults

    @router.post("/reset")
    async def reset() -> dict[str, str]:
        state.reset()
        return {"status": "OK"}

    return router


class AxisApp(FastAPI):
    """A simulator's FastAPI app with :class:`FaultInjection` in front of everything: the faults and the axis'
    operations are served before FastAPI's own middleware stack (error, body-limit and telemetry layers, each
    wrapping every send) sees the request; the rest (``/_sim``, the API description) goes on to FastAPI."""

    def __init__(self, title: str, state: AxisState, failure_body: FailureBody) -> None:
        super().__init__(title=title, docs_url="/_sim/docs", openapi_url="/_sim/openapi.json", redoc_url=None)
        self.state.axis = state
        self.direct_operations: dict[str, OperationEndpoint] = {}
        self._front = FaultInjection(super().__call__, state, failure_body, self.direct_operations)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        scope["app"] = self
        await self._front(scope, receive, send)


def new_app(title: str, state: AxisState, failure_body: FailureBody) -> AxisApp:
    """An app with the inspection routes and fault injection; the axis adds its operations (and
    ``serve_directly`` the ones its ``POST /{operation}`` route answers)."""
    app = AxisApp(title, state, failure_body)
    app.include_router(inspection_router(state))
    return app


def serve_directly(app: AxisApp, endpoint: OperationEndpoint, operations: Iterable[str]) -> None:
    """Let the fault injection in front of the app run ``endpoint`` for ``POST /<operation>`` itself (see
    :class:`FaultInjection`); the route stays, for the API description and for every other path."""
    app.direct_operations.update(dict.fromkeys(operations, endpoint))


@dataclass(frozen=True, slots=True)
class ServerTls:
    """HTTPS for a simulator, as an axis that serves it: its certificate chain and key (PEM) and, with
    ``client_ca_file``, mutual TLS: a client must show a certificate that CA signed, or the handshake fails."""

    cert_file: str
    key_file: str
    client_ca_file: str | None = None

    def uvicorn_options(self) -> dict[str, Any]:
        options: dict[str, Any] = {"ssl_certfile": self.cert_file, "ssl_keyfile": self.key_file}
        if self.client_ca_file is not None:
            options |= {"ssl_ca_certs": self.client_ca_file, "ssl_cert_reqs": ssl.CERT_REQUIRED}
        return options


def base_url(host: str, port: int, *, tls: bool = False) -> str:
    scheme = "https" if tls else "http"
    return f"{scheme}://[{host}]:{port}" if ":" in host else f"{scheme}://{host}:{port}"


@asynccontextmanager
async def serve(
    app: FastAPI, *, host: str = "127.0.0.1", port: int = 0, tls: ServerTls | None = None
) -> AsyncIterator[str]:
    """Serve ``app`` with uvicorn in the running event loop; yields its base URL (``port=0``: any free port)."""
    # No proxy stands in front of a simulator: uvicorn's proxy-headers layer would only cost time.
    config = uvicorn.Config(
        app,
        host=host,
        port=port,
        log_level="warning",
        lifespan="off",
        loop="none",
        proxy_headers=False,
        **(tls.uvicorn_options() if tls is not None else {}),
    )
    server = uvicorn.Server(config)
    task = asyncio.create_task(server.serve())
    try:
        deadline = time.monotonic() + 10
        while not server.started:
            if time.monotonic() > deadline:
                raise RuntimeError("simulator server did not start within 10 s")
            if task.done():
                task.result()
                raise RuntimeError("simulator server stopped while starting")
            await asyncio.sleep(0.01)
        bound = server.servers[0].sockets[0].getsockname()[1]
        yield base_url(host, int(bound), tls=tls is not None)
    finally:
        server.should_exit = True
        await task


def run_app(app: FastAPI, *, host: str, port: int, log_level: str = "info", tls: ServerTls | None = None) -> None:
    """Serve ``app`` until interrupted (blocking). What is built by then, the shelves included, is settled out of
    the collector's sight first, as in the bus' own processes."""
    settle_heap()
    options = tls.uvicorn_options() if tls is not None else {}
    uvicorn.run(app, host=host, port=port, log_level=log_level, proxy_headers=False, **options)
