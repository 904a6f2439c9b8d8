"""``/v1/messages`` (intake, look-up, search) and ``/v1/validate`` (the conformance sandbox)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Annotated, Any

import orjson
from fastapi import APIRouter, Query, Request
from starlette.responses import Response

from docbus.envelope import MessageKind, MessageStatus
from docbus.errors import NotFound, PayloadGone
from docbus.flows import BadWindow, arrival_bounds
from docbus.gateway.deps import Caller, State, bad_query
from docbus.ids import MESSAGE_ID_PATTERN
from docbus.metrics import INTAKE_ACCEPTED, INTAKE_REPLAYED
from docbus.runtime import BusRuntime
from docbus.store.agencies import Agency, Role
from docbus.store.messages import MessageRecord

router = APIRouter(prefix="/v1", tags=["messages"])
SINCE_HELP = "received at or after: a duration back from now (15m, 2h, 1d) or an ISO 8601 instant (UTC without offset)"
UNTIL_HELP = "received before: a duration back from now or an ISO 8601 instant"

ACCEPTED_DOC: dict[int | str, dict[str, Any]] = {
    202: {"description": "Accepted and durable: the signed receipt (a replay returns the original, byte for byte)."},
    400: {"description": "Not well-formed, or unsafe XML (DTD, entities, too deep)."},
    401: {"description": "No or unknown API key."},
    403: {"description": "The message's sender is not the authenticated agency."},
    408: {"description": "The body stopped arriving, or was still arriving at the read deadline (`request-timeout`)."},
    409: {"description": "Idempotency-Key reused for different content."},
    413: {"description": "Body over the size cap."},
    415: {"description": "Neither XML nor JSON."},
    422: {"description": "Schema or semantic violation; `errors` lists every one."},
    429: {"description": "The agency submits faster than its rate (`rate-limited`); `Retry-After` says when to retry."},
    503: {"description": "The bodies in flight fill this gateway's memory budget (`busy`, with `Retry-After`)."},
}
BODY_DOC: dict[str, Any] = {
    "requestBody": {
        "required": True,
        "content": {
            "application/xml": {"schema": {"type": "string"}, "example": "<edXML ...>"},
            "application/json": {"schema": {"type": "object"}},
        },
    }
}


def _visible(caller: Agency, record: MessageRecord) -> bool:
    return caller.role is Role.OPERATOR or record.visible_to(caller.organ_id)


@router.post("/messages", status_code=202, responses=ACCEPTED_DOC, openapi_extra=BODY_DOC)
async def submit_message(request: Request, state: State, caller: Caller) -> Response:
    """Submit an edXML document or status message (XML) or a dossier / dossier progress (JSON)."""
    accepted = await accept_submission(request, state, caller)
    response = Response(accepted.receipt, status_code=202)
    response.raw_headers = accepted.headers()
    return response


@dataclass(frozen=True, slots=True)
class Accepted:
    """What intake answers with: 202 and the signed receipt (the original one, byte for byte, for a replay)."""

    message_id: str
    receipt: bytes
    replayed: bool

    def headers(self) -> list[tuple[bytes, bytes]]:
        headers = [
            (b"content-type", b"application/json"),
            (b"content-length", str(len(self.receipt)).encode()),
            (b"location", f"/v1/messages/{self.message_id}".encode()),
        ]
        if self.replayed:
            headers.append((b"idempotent-replayed", b"true"))
        return headers


async def accept_submission(request: Request, state: BusRuntime, caller: Agency) -> Accepted:
    """The whole of intake for one request; shared by the route above and the fast path in front of FastAPI."""
    state.check_rate(caller)  # before the body is read: a refusal costs next to nothing
    content_type = request.headers.get("content-type", "")
    async with state.body_budget.reading(request, state.body_limits) as body:
        outcome = await state.intake.accept(
            caller,
            body,
            content_type,
            idempotency_key=request.headers.get("idempotency-key"),
            traceparent=request.headers.get("traceparent"),
        )
    (INTAKE_REPLAYED if outcome.replayed else INTAKE_ACCEPTED).inc()
    return Accepted(outcome.message_id, outcome.receipt, outcome.replayed)


@router.post("/validate", openapi_extra=BODY_DOC, responses={k: v for k, v in ACCEPTED_DOC.items() if k != 202})
async def validate_message(request: Request, state: State, caller: Caller) -> Response:
    """Run exactly the intake checks and store nothing: 200 with what was recognised, or every error found."""
    state.check_rate(caller)  # validation costs what intake's does: the same budget
    async with state.body_budget.reading(request, state.body_limits) as body:
        message = await state.intake.validate(body, request.headers.get("content-type", ""))
    state.intake.check_sender(caller, message)
    return Response(orjson.dumps({"valid": True, **message.summary()}), media_type="application/json")


@router.get("/messages/{message_id}")
async def get_message(message_id: str, state: State, caller: Caller) -> Response:
    """A message's metadata, current status and full event timeline."""
    found = await state.messages.with_timeline(message_id)
    if found is None or not _visible(caller, found[0]):
        raise NotFound(f"no message {message_id} is visible to {caller.organ_id}")
    record, timeline = found
    body = {**record.as_dict(), "events": [e.as_dict() for e in timeline]}
    return Response(orjson.dumps(body), media_type="application/json")


@router.get("/messages/{message_id}/receipt")
async def get_receipt(message_id: str, state: State, caller: Caller) -> Response:
    """The signed acceptance receipt, byte for byte as first returned."""
    record = await state.messages.get(message_id)
    receipt = await state.messages.receipt(message_id) if record is not None else None
    if record is None or receipt is None or not _visible(caller, record):
        raise NotFound(f"no message {message_id} is visible to {caller.organ_id}")
    return Response(receipt, media_type="application/json")


@router.get("/messages/{message_id}/payload")
async def get_payload(message_id: str, state: State, caller: Caller) -> Response:
    """The payload exactly as submitted."""
    record = await state.messages.get(message_id)
    if record is None or not _visible(caller, record):
        raise NotFound(f"no message {message_id} is visible to {caller.organ_id}")
    if record.payload_purged_at is not None:
        raise PayloadGone(
            f"the payload of {message_id} was deleted on {record.payload_purged_at.isoformat()} (payload "
            "retention); its sha256 is in the message and the PAYLOAD_PURGED event of its timeline"
        )
    if record.payload_ref is not None:
        payload: bytes | None = await state.payload_store.get(record.payload_ref)
    else:
        payload = await state.messages.payload(message_id)
    if payload is None:
        raise NotFound(f"the payload of {message_id} is not in the database")
    return Response(payload, media_type=record.content_type)


@router.get("/messages")
async def search_messages(
    state: State,
    caller: Caller,
    business_id: str | None = None,
    sender: str | None = None,
    status: Annotated[MessageStatus | None, Query(description="current status, in any letter case")] = None,
    kind: MessageKind | None = None,
    receiver: Annotated[str | None, Query(description="messages addressed to this organ id")] = None,
    since: Annotated[str | None, Query(description=SINCE_HELP)] = None,
    until: Annotated[str | None, Query(description=UNTIL_HELP)] = None,
    before: Annotated[
        str | None, Query(pattern=MESSAGE_ID_PATTERN, description="page: message id to list older messages from")
    ] = None,
    limit: Annotated[int, Query(ge=1, le=500)] = 50,
) -> Response:
    """Search messages, newest first. Agencies see what they sent or received; operators see all.

    An unknown status or kind, a page mark that is not a message id, or a time that cannot be read (or a
    `since` not before `until`) is refused (400, with what is expected): it could only ever match nothing, and an
    empty answer would hide the mistake."""
    try:
        start, end = arrival_bounds(since, until)
    except BadWindow as exc:
        raise bad_query(exc.field, str(exc)) from None
    records = await state.messages.search(
        visible_to=None if caller.role is Role.OPERATOR else caller.organ_id,
        sender=sender,
        business_id=business_id,
        status=status,
        kind=kind,
        receiver=receiver,
        since=start,
        until=end,
        before=before,
        limit=limit,
    )
    items = [r.as_dict() for r in records]
    body = {"items": items, "next_before": items[-1]["message_id"] if len(items) == limit else None}
    return Response(orjson.dumps(body), media_type="application/json")
