"""A provincial integration platform (LGSP) simulator: the REST API of ``docbus.connectors.provincial_axis``.

Operations (``POST /{operation}``): ``login`` (``{"systemId", "secret"}`` → bearer token with ``expiresIn``),
then, with ``Authorization: Bearer <token>``: ``sendEdoc`` (multipart, file field ``edocFile``, form field
``messagetype``; ``Idempotency-Key`` honoured), ``syncReceivedEdocList``, ``getEdoc`` (base64) and
``updateStatus`` (INITIAL | PROCESSING | DONE | FAIL). Answers carry numeric ``ErrorCode``s: 15 (HTTP 401) for
bad credentials or a missing / expired token, 10, 18, 21, 22 (HTTP 400) for packets it will not take.
``POST /_sim/expire-tokens`` revokes every token at once. Receipts, faults and the other ``/_sim`` routes: see
:mod:`docbus.simulators.common`.

    python -c "from docbus.simulators.provincial_axis import run; run(9102)"
"""

from __future__ import annotations

import base64
import hmac
import secrets
from email import message_from_bytes, policy
from email.message import EmailMessage
from typing import Any

from fastapi import FastAPI, Request

from docbus.simulators.common import (
    BAD_CREDENTIALS,
    FILE_ERROR,
    FORM_FRAMING_BYTES,
    INVALID_FILE,
    AxisAnswer,
    AxisState,
    Refusal,
    SimulatorConfig,
    capped_body,
    json_object,
    new_app,
    requested_receipt,
    run_app,
    serve_directly,
)

LGSP_STATUSES = {"INITIAL": "pending", "PROCESSING": "processing", "DONE": "done", "FAIL": "fail"}


def failure(code: int, description: str) -> dict[str, Any]:
    return {"status": "FAIL", "ErrorCode": code, "ErrorDesc": description}


def ok(**fields: Any) -> dict[str, Any]:
    return {"status": "OK", "ErrorCode": 0, "ErrorDesc": "", **fields}


def create_app(config: SimulatorConfig | None = None, *, state: AxisState | None = None) -> FastAPI:
    """The simulator app; its :class:`AxisState` is ``app.state.axis``, live tokens ``app.state.tokens``."""
    state = state or AxisState(config or SimulatorConfig())
    app = new_app("Provincial integration platform (LGSP) simulator", state, failure)
    tokens: dict[str, float] = {}  # token -> expiry (state clock)
    app.state.tokens = tokens

    @app.post("/_sim/expire-tokens")
    async def expire_tokens() -> dict[str, Any]:
        revoked = len(tokens)
        tokens.clear()
        return {"status": "OK", "revoked": revoked}

    @app.post("/login")
    async def login(request: Request) -> AxisAnswer:
        try:
            body = await json_object(request)
        except Refusal as refusal:
            return AxisAnswer(failure(refusal.code, refusal.description), status_code=400)
        system_id, secret = body.get("systemId"), body.get("secret")
        config = state.config
        if not (
            isinstance(system_id, str)
            and isinstance(secret, str)
            and hmac.compare_digest(system_id.encode(), config.system_id.encode())
            and hmac.compare_digest(secret.encode(), config.secret.encode())
        ):
            return AxisAnswer(failure(BAD_CREDENTIALS, "bad system id or secret"), status_code=401)
        token = secrets.token_urlsafe(24)
        tokens[token] = state.clock() + config.token_ttl
        return AxisAnswer(ok(token=token, expiresIn=config.token_ttl))

    @app.post("/{operation}")
    async def operation(operation: str, request: Request) -> AxisAnswer:
        handler = _OPERATIONS.get(operation)
        if handler is None:
            return AxisAnswer(failure(INVALID_FILE, f"unknown operation {operation!r}"), status_code=404)
        scheme, _, token = request.headers.get("authorization", "").partition(" ")
        if scheme.lower() != "bearer" or tokens.get(token, 0.0) <= state.clock():
            tokens.pop(token, None)
            return AxisAnswer(failure(BAD_CREDENTIALS, "missing, unknown or expired token"), status_code=401)
        try:
            return AxisAnswer(await handler(state, request))
        except Refusal as refusal:
            return AxisAnswer(failure(refusal.code, refusal.description), status_code=refusal.http_status)

    serve_directly(app, operation, _OPERATIONS)
    return app


def run(port: int, *, host: str = "127.0.0.1", config: SimulatorConfig | None = None, log_level: str = "info") -> None:
    """Serve the simulator until interrupted."""
    run_app(create_app(config), host=host, port=port, log_level=log_level)


async def _send_edoc(state: AxisState, request: Request) -> dict[str, Any]:
    if state.faults.permanent_error_code is not None:
        raise Refusal(state.faults.permanent_error_code, "refused (simulated permanent error)")
    body = await capped_body(request, state.config.max_body_bytes + FORM_FRAMING_BYTES)
    fields = form_fields(request.headers.get("content-type", ""), body)
    if "edocFile" not in fields:
        raise Refusal(FILE_ERROR, "multipart field edocFile is missing")
    messagetype = fields["messagetype"].decode("utf-8", "replace") if "messagetype" in fields else "edoc"
    packet, duplicate = state.accept(fields["edocFile"], messagetype, request.headers.get("idempotency-key"))
    return ok(docId=packet.doc_id, duplicate=duplicate)


async def _received_list(state: AxisState, request: Request) -> dict[str, Any]:
    statuses = {value: key for key, value in LGSP_STATUSES.items()}
    return ok(
        data=[
            {
                "docId": receipt.doc_id,
                "from": receipt.sender,
                "to": receipt.receiver,
                "messagetype": "status",
                "status": statuses[state.transport_status(receipt)],
            }
            for receipt in state.waiting()
        ]
    )


async def _get_edoc(state: AxisState, request: Request) -> dict[str, Any]:
    receipt = requested_receipt(state, (await json_object(request)).get("docId"), http_status=404)
    content = base64.b64encode(state.receipt_packet(receipt)).decode("ascii")
    return ok(data={"docId": receipt.doc_id, "content": content})


async def _update_status(state: AxisState, request: Request) -> dict[str, Any]:
    body = await json_object(request)
    doc_id, status = body.get("docId"), body.get("status")
    if status not in LGSP_STATUSES:
        raise Refusal(INVALID_FILE, f"status must be one of {' | '.join(LGSP_STATUSES)}")
    receipt = requested_receipt(state, doc_id, http_status=404)
    state.set_transport_status(receipt, LGSP_STATUSES[str(status)])
    return ok(docId=receipt.doc_id)


def form_fields(content_type: str, body: bytes) -> dict[str, bytes]:
    """The named parts of a ``multipart/form-data`` body (read with the standard library's MIME parser)."""
    if not content_type.lower().startswith("multipart/form-data"):
        raise Refusal(FILE_ERROR, "sendEdoc expects multipart/form-data")
    message = message_from_bytes(
        b"Content-Type: " + content_type.encode("latin-1") + b"\r\n\r\n" + body, policy=policy.HTTP
    )
    if not message.is_multipart():
        raise Refusal(FILE_ERROR, "multipart body could not be read")
    fields: dict[str, bytes] = {}
    for part in message.iter_parts() if isinstance(message, EmailMessage) else ():
        name = part.get_param("name", header="content-disposition")
        payload = part.get_payload(decode=True)
        if isinstance(name, str) and isinstance(payload, bytes):
            fields.setdefault(name, payload)
    return fields


_OPERATIONS = {
    "sendEdoc": _send_edoc,
    "syncReceivedEdocList": _received_list,
    "getEdoc": _get_edoc,
    "updateStatus": _update_status,
}
