"""Client of the national document axis (VXP, trục liên thông văn bản quốc gia).

    async with NationalAxisClient("http://127.0.0.1:9101", system_id="docbus", secret="...") as axis:
        sent = await axis.send_edoc(packet, "edoc", from_organ="000.00.00.G22", idempotency_key=message_id)
        for item in await axis.get_received_edoc_list():
            packet = await axis.get_edoc(item.doc_id)
            await axis.update_status(item.doc_id, "done")

Wire protocol (HTTP + JSON, the operation in the path): every call is ``POST {url}/{operation}`` —
``sendEdoc``, ``getReceivedEdocList``, ``getSentEdocList``, ``getEdoc``, ``updateStatus`` — carrying the auth
headers ``systemid`` (our system's id at the axis), ``timestamp`` (Unix time in milliseconds, decimal digits) and
``signature``. ``sendEdoc`` adds ``from`` (the sending organ id), ``servicetype: eDoc`` and
``messagetype: edoc|status``; its body is the raw edXML, and ``Idempotency-Key`` (not signed) asks the axis to
answer a repeated submission with the first DocId. ``getEdoc`` and ``updateStatus`` take a JSON body
(``{"DocId": ...}``, ``{"DocId": ..., "status": "done"|"fail"|"processing"}``). Every answer is JSON::

    {"status": "OK" | "FAIL", "ErrorCode": "0", "ErrorDesc": "...", ...operation fields}

**Signature.** ``signature = hex(HMAC-SHA256(key=secret, msg=canonical))`` where ``canonical`` is the JSON object
of the signed headers — every auth header sent except ``signature`` itself (``systemid``, ``timestamp``, and on
``sendEdoc`` also ``from``, ``servicetype``, ``messagetype``), names in lower case, values exactly as sent — with
the keys sorted, no whitespace at all (separators ``,`` and ``:``), non-ASCII characters written as UTF-8 rather
than ``\\u`` escapes, encoded as UTF-8. For example::

    {"from":"000.00.00.G22","messagetype":"edoc","servicetype":"eDoc","systemid":"docbus","timestamp":"1764200000000"}

Failures raise :class:`NationalAxisError`; its ``retriable`` flag says whether trying again can help: timeouts,
transport errors, HTTP 408/429/5xx and ErrorCode 20 are retriable; ErrorCodes 10, 15, 18, 19, 21, 22, 23 and
other 4xx answers are not (see :data:`PERMANENT_CODES`).
"""

from __future__ import annotations

import hmac
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, Literal

import httpx
import orjson

from docbus.connectors.http import AxisClient, AxisError, failure_reason, json_excerpt, json_object

EdocMessageType = Literal["edoc", "status"]
TransportStatus = Literal["done", "fail", "processing"]

# Error codes the axes answer with (same numbering on the provincial platforms).
RETRIABLE_CODES = frozenset({"20"})  # internal error at the axis
PERMANENT_CODES = frozenset(
    {
        "10",  # invalid file
        "15",  # bad credentials (no login to renew on this axis)
        "18",  # unknown recipient
        "19",  # sender not registered
        "21",  # file error
        "22",  # edXML not in the required format
        "23",  # recipient locked
    }
)


def canonical_headers(headers: Mapping[str, str]) -> bytes:
    """The bytes the signature covers: the signed headers as compact, key-sorted UTF-8 JSON (orjson's output is
    byte for byte that of ``json.dumps(..., sort_keys=True, separators=(",", ":"), ensure_ascii=False)``, and
    cheaper: every call to the axis is signed, and the simulator checks every signature)."""
    return orjson.dumps({name.lower(): value for name, value in headers.items()}, option=orjson.OPT_SORT_KEYS)


def sign_headers(secret: str, headers: Mapping[str, str]) -> str:
    """Hex HMAC-SHA256 of :func:`canonical_headers` under ``secret``."""
    return hmac.digest(secret.encode("utf-8"), canonical_headers(headers), "sha256").hex()


def answer_is_retriable(http_status: int | None, error_code: str | None) -> bool:
    """Whether an unsuccessful answer may succeed later (``None`` status: no answer at all)."""
    if http_status is None or http_status in (408, 429) or http_status >= 500:
        return True
    if error_code in PERMANENT_CODES:
        return False
    if error_code in RETRIABLE_CODES:
        return True
    # Unknown codes: a 4xx says the request itself is wrong; anything else may be a passing fault.
    return not 400 <= http_status < 500


class NationalAxisError(AxisError[str]):
    """Raised when the national axis did not do what was asked; ``retriable`` says whether trying again can help."""

    axis = "national axis"


@dataclass(frozen=True, slots=True)
class SentEdoc:
    """The axis' answer to ``sendEdoc``: its DocId, and whether it already had this idempotency key."""

    doc_id: str
    duplicate: bool = False


@dataclass(frozen=True, slots=True)
class ReceivedEdoc:
    """One entry of ``getReceivedEdocList``: a document or status message waiting for our system."""

    doc_id: str
    messagetype: str
    sender: str | None
    created_time: str | None = None
    raw: dict[str, Any] = field(default_factory=dict)


class NationalAxisClient(AxisClient):
    """Speaks the national axis' HTTP API as one registered system (``system_id`` + HMAC ``secret``)."""

    error = NationalAxisError

    async def send_edoc(
        self,
        raw_edxml: bytes,
        messagetype: EdocMessageType,
        from_organ: str,
        idempotency_key: str | None = None,
    ) -> SentEdoc:
        """Submit a document or status message (``sendEdoc``); returns the axis' DocId."""
        signed = {"from": from_organ, "servicetype": "eDoc", "messagetype": messagetype}
        extra = {"Content-Type": "application/xml"}
        if idempotency_key:
            extra["Idempotency-Key"] = idempotency_key
        body = await self._call("sendEdoc", signed=signed, extra=extra, content=raw_edxml)
        doc_id = body.get("DocId")
        if not isinstance(doc_id, str) or not doc_id:
            raise NationalAxisError("sendEdoc", "answer has no DocId", retriable=True, excerpt=json_excerpt(body))
        return SentEdoc(doc_id=doc_id, duplicate=bool(body.get("Duplicate", False)))

    async def get_received_edoc_list(self) -> list[ReceivedEdoc]:
        """What waits for our system (``getReceivedEdocList``): documents and status messages."""
        return _entries("getReceivedEdocList", await self._call("getReceivedEdocList"))

    async def get_sent_edoc_list(self) -> list[ReceivedEdoc]:
        """What our system has sent (``getSentEdocList``)."""
        return _entries("getSentEdocList", await self._call("getSentEdocList"))

    async def get_edoc(self, doc_id: str) -> bytes:
        """The raw packet of one received item (``getEdoc``; the axis sends it base64-encoded)."""
        return self._packet(await self._call("getEdoc", json_body={"DocId": doc_id}))

    async def update_status(self, doc_id: str, status: TransportStatus) -> None:
        """Acknowledge a received item (``updateStatus``): ``done``, ``fail`` or ``processing``."""
        await self._call("updateStatus", json_body={"DocId": doc_id, "status": status})

    def auth_headers(self, signed: Mapping[str, str] | None = None) -> dict[str, str]:
        """The auth headers of one request: ``systemid``, ``timestamp``, the extra ``signed`` ones, ``signature``."""
        headers = {"systemid": self.system_id, "timestamp": str(time.time_ns() // 1_000_000), **(signed or {})}
        headers["signature"] = sign_headers(self._secret, headers)
        return headers

    async def _call(
        self,
        operation: str,
        *,
        signed: Mapping[str, str] | None = None,
        extra: Mapping[str, str] | None = None,
        content: bytes | None = None,
        json_body: dict[str, Any] | None = None,
    ) -> dict[str, Any]:
        headers = {**self.auth_headers(signed), **(extra or {})}
        response = await self._post(operation, headers=headers, content=content, json=json_body)
        return _answer(operation, response)


def _answer(operation: str, response: httpx.Response) -> dict[str, Any]:
    """The JSON body of a successful answer; raise :class:`NationalAxisError` for anything else."""
    body = json_object(response)
    code = None if body is None or body.get("ErrorCode") is None else str(body["ErrorCode"])
    if body is not None and response.is_success and body.get("status") == "OK" and code in (None, "0"):
        return body
    raise NationalAxisError(
        operation,
        failure_reason(response, body, code),
        retriable=answer_is_retriable(response.status_code, code),
        http_status=response.status_code,
        error_code=code,
        excerpt=response.text[:500],
    )


def _entries(operation: str, body: dict[str, Any]) -> list[ReceivedEdoc]:
    data = body.get("data", [])
    if not isinstance(data, list):
        raise NationalAxisError(operation, "answer data is not a list", retriable=True, excerpt=json_excerpt(body))
    entries = []
    for item in data:
        if isinstance(item, dict) and isinstance(item.get("DocId"), str):
            entries.append(
                ReceivedEdoc(
                    doc_id=item["DocId"],
                    messagetype=str(item.get("messagetype", "edoc")),
                    sender=item.get("from"),
                    created_time=item.get("created_time"),
                    raw=item,
                )
            )
    return entries
