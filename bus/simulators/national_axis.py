"""A national document axis (VXP) simulator: the HTTP + JSON API of ``docbus.connectors.national_axis``.

Operations (``POST /{operation}``, HMAC-signed headers checked on every call): ``sendEdoc`` (raw edXML body;
``from``, ``servicetype: eDoc``, ``messagetype: edoc|status``; ``Idempotency-Key`` honoured),
``getReceivedEdocList``, ``getSentEdocList``, ``getEdoc`` (base64), ``updateStatus`` (done | fail | processing).
A missing or wrong ``systemid``, a stale ``timestamp`` or a bad ``signature`` is answered 401 with
``{"status": "FAIL", "ErrorCode": "15"}``. Business receipts, faults and ``/_sim`` routes: see
:mod:`docbus.simulators.common`.

    python -c "from docbus.simulators.national_axis import run; run(9101)"
"""

from __future__ import annotations

import base64
import hmac
from datetime import datetime
from typing import Any

from fastapi import FastAPI, Request

from docbus.connectors.national_axis import sign_headers
from docbus.simulators.common import (
    BAD_CREDENTIALS,
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
from docbus.simulators.receipts import TIMESTAMP_FORMAT, VIETNAM_TIME

SEND_HEADERS = ("from", "servicetype", "messagetype")
TRANSPORT_STATUSES = ("done", "fail", "processing")


def failure(code: int, description: str) -> dict[str, Any]:
    return {"status": "FAIL", "ErrorCode": str(code), "ErrorDesc": description}


def ok(**fields: Any) -> dict[str, Any]:
    return {"status": "OK", "ErrorCode": "0", "ErrorDesc": "", **fields}


def create_app(config: SimulatorConfig | None = None, *, state: AxisState | None = None) -> FastAPI:
    """The simulator app; its :class:`AxisState` is ``app.state.axis``."""
    state = state or AxisState(config or SimulatorConfig())
    app = new_app("National document axis simulator", state, failure)

    @app.post("/{operation}")
    async def operation(operation: str, request: Request) -> AxisAnswer:
        handler = _OPERATIONS.get(operation)
        if handler is None:
            return AxisAnswer(failure(INVALID_FILE, f"unknown operation {operation!r}"), status_code=404)
        refused = _authenticate(state, operation, request)
        if refused is not None:
            return refused
        try:
            return AxisAnswer(await handler(state, request))
        except Refusal as refusal:
            # The axis reports business refusals in the body of a 200 answer.
            return AxisAnswer(failure(refusal.code, refusal.description))

    serve_directly(app, operation, _OPERATIONS)
    return app


def run(port: int, *, host: str = "127.0.0.1", config: SimulatorConfig | None = None, log_level: str = "info") -> None:
    """Serve the simulator until interrupted."""
    run_app(create_app(config), host=host, port=port, log_level=log_level)


def _authenticate(state: AxisState, operation: str, request: Request) -> AxisAnswer | None:
    names = ("systemid", "timestamp", *(SEND_HEADERS if operation == "sendEdoc" else ()))
    missing = [name for name in (*names, "signature") if name not in request.headers]
    if missing:
        return _unauthorized(f"missing auth headers: {', '.join(missing)}")
    signed = {name: request.headers[name] for name in names}
    config = state.config
    if signed["systemid"] != config.system_id:
        return _unauthorized("unknown systemid")
    try:
        stamp = int(signed["timestamp"]) / 1000
    except ValueError:
        return _unauthorized("timestamp is not milliseconds since the epoch")
    if abs(state.clock() - stamp) > config.timestamp_skew:
        return _unauthorized("timestamp outside the accepted window")
    if not hmac.compare_digest(sign_headers(config.secret, signed), request.headers["signature"]):
        return _unauthorized("bad signature")
    return None


def _unauthorized(reason: str) -> AxisAnswer:
    return AxisAnswer(failure(BAD_CREDENTIALS, reason), status_code=401)


async def _send_edoc(state: AxisState, request: Request) -> dict[str, Any]:
    if state.faults.permanent_error_code is not None:
        raise Refusal(state.faults.permanent_error_code, "refused (simulated permanent error)")
    if request.headers["servicetype"] != "eDoc":
        raise Refusal(INVALID_FILE, "servicetype must be eDoc")
    packet, duplicate = state.accept(
        await capped_body(request, state.config.max_body_bytes),
        request.headers["messagetype"],
        request.headers.get("idempotency-key"),
        expected_sender=request.headers["from"],
    )
    return ok(DocId=packet.doc_id, Duplicate=duplicate)


async def _received_list(state: AxisState, request: Request) -> dict[str, Any]:
    return ok(
        data=[
            {
                "DocId": receipt.doc_id,
                "from": receipt.sender,
                "to": receipt.receiver,
                "messagetype": "status",
                "servicetype": "eDoc",
                "status": state.transport_status(receipt),
                "created_time": datetime.fromtimestamp(receipt.due, VIETNAM_TIME).strftime(TIMESTAMP_FORMAT),
            }
            for receipt in state.waiting()
        ]
    )


async def _sent_list(state: AxisState, request: Request) -> dict[str, Any]:
    return ok(
        data=[
            {**packet.summary(state.duplicates(packet)), "from": packet.header.sender.organ_id}
            for packet in state.received.values()
        ]
    )


async def _get_edoc(state: AxisState, request: Request) -> dict[str, Any]:
    receipt = requested_receipt(state, (await json_object(request)).get("DocId"))
    content = base64.b64encode(state.receipt_packet(receipt)).decode("ascii")
    return ok(data={"DocId": receipt.doc_id, "content": content})


async def _update_status(state: AxisState, request: Request) -> dict[str, Any]:
    body = await json_object(request)
    doc_id, status = body.get("DocId"), body.get("status")
    if status not in TRANSPORT_STATUSES:
        raise Refusal(INVALID_FILE, f"status must be one of {', '.join(TRANSPORT_STATUSES)}")
    receipt = requested_receipt(state, doc_id)
    state.set_transport_status(receipt, str(status))
    return ok(DocId=receipt.doc_id)


_OPERATIONS = {
    "sendEdoc": _send_edoc,
    "getReceivedEdocList": _received_list,
    "getSentEdocList": _sent_list,
    "getEdoc": _get_edoc,
    "updateStatus": _update_status,
}
