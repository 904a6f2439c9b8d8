"""Client of a provincial integration platform (LGSP, nền tảng tích hợp, chia sẻ dữ liệu cấp tỉnh).

    async with ProvincialAxisClient("http://127.0.0.1:9102", system_id="docbus", secret="...") as lgsp:
        sent = await lgsp.send_edoc(packet, idempotency_key=message_id)
        for item in await lgsp.sync_received_edoc_list():
            packet = await lgsp.get_edoc(item.doc_id)
            await lgsp.update_status(item.doc_id, "DONE")

Wire protocol (REST + JSON, ``POST {url}/{operation}``):

- ``login`` with ``{"systemId": ..., "secret": ...}`` answers ``{"token": ..., "expiresIn": seconds}``; every
  other call carries ``Authorization: Bearer <token>``. The client logs in on first use, again shortly before the
  token expires, and once more when the platform answers 401 / ErrorCode 15 (a token revoked early); bad
  credentials after that fresh login are final.
- ``sendEdoc``: multipart form, the packet in the file field ``edocFile`` and ``messagetype`` (``edoc`` or
  ``status``) as a form field; ``Idempotency-Key`` header. Answers ``{"docId": ..., "duplicate": bool}``.
- ``syncReceivedEdocList``: what waits for our system; ``getEdoc`` (``{"docId"}``): the packet, base64;
  ``updateStatus`` (``{"docId", "status"}``): INITIAL | PROCESSING | DONE | FAIL.

Answers are ``{"status": "OK" | "FAIL", "ErrorCode": <int>, "ErrorDesc": "..."}``. Error codes: 0 ok,
10 invalid file, 15 bad credentials, 18 unknown recipient, 19 sender not registered, 20 internal error,
21 file error, 22 edXML not in the required format, 23 recipient locked. Failures raise
:class:`ProvincialAxisError`: 20, transport errors, timeouts, HTTP 408/429/5xx are retriable; 10, 18, 19, 21,
22, 23 (and 15 after one fresh login) are not.
"""

from __future__ import annotations

import asyncio
import ssl
import time
from dataclasses import dataclass, field
from typing import Any, Literal

import httpx

from docbus.connectors.http import AxisClient, AxisError, failure_reason, json_excerpt, json_object
from docbus.connectors.transport import MAX_RESPONSE_BYTES

LgspStatus = Literal["INITIAL", "PROCESSING", "DONE", "FAIL"]

OK = 0
BAD_CREDENTIALS = 15
RETRIABLE_CODES = frozenset({20})  # internal error
PERMANENT_CODES = frozenset({10, 18, 19, 21, 22, 23})  # 15 too, but only after a fresh login failed
ERROR_MEANINGS = {
    10: "invalid file",
    15: "bad credentials",
    18: "unknown recipient",
    19: "sender not registered",
    20: "internal error",
    21: "file error",
    22: "edXML not in the required format",
    23: "recipient locked",
}


class ProvincialAxisError(AxisError[int]):
    """Raised when the provincial platform did not do what was asked; ``retriable`` says whether to try again."""

    axis = "provincial axis"


def answer_is_retriable(http_status: int | None, error_code: int | None) -> bool:
    """Whether an unsuccessful answer may succeed later (``None`` status: no answer at all)."""
    if http_status is None or http_status in (408, 429) or http_status >= 500:
        return True
    if error_code in PERMANENT_CODES or error_code == BAD_CREDENTIALS:
        return False
    if error_code in RETRIABLE_CODES:
        return True
    return not 400 <= http_status < 500


@dataclass(frozen=True, slots=True)
class SentEdoc:
    """The platform's answer to ``sendEdoc``: its document id, and whether it already had this idempotency key."""

    doc_id: str
    duplicate: bool = False


@dataclass(frozen=True, slots=True)
class ReceivedEdoc:
    """One entry of ``syncReceivedEdocList``."""

    doc_id: str
    messagetype: str
    sender: str | None
    raw: dict[str, Any] = field(default_factory=dict)


class _Unauthorized(Exception):
    """The token was refused: log in again and repeat the call once."""

    def __init__(self, error: ProvincialAxisError) -> None:
        super().__init__(str(error))
        self.error = error


class ProvincialAxisClient(AxisClient):
    """Speaks an LGSP's REST API as one registered system (``system_id`` + ``secret`` → bearer token)."""

    error = ProvincialAxisError

    def __init__(
        self,
        url: str,
        system_id: str,
        secret: str,
        *,
        timeout: float = 30.0,
        connect_timeout: float = 5.0,
        max_response_bytes: int = MAX_RESPONSE_BYTES,
        ssl_context: ssl.SSLContext | None = None,
        transport: httpx.AsyncBaseTransport | None = None,
    ) -> None:
        super().__init__(
            url,
            system_id,
            secret,
            timeout=timeout,
            connect_timeout=connect_timeout,
            max_response_bytes=max_response_bytes,
            ssl_context=ssl_context,
            transport=transport,
        )
        self._token: str | None = None
        self._renew_at = 0.0  # monotonic time after which the token is renewed before use
        self._login_lock = asyncio.Lock()

    async def login(self) -> None:
        """Trade system id and secret for a bearer token (ErrorCode 15 when they are wrong: permanent)."""
        async with self._login_lock:
            await self._login()

    async def send_edoc(
        self,
        raw_edxml: bytes,
        messagetype: Literal["edoc", "status"] = "edoc",
        idempotency_key: str | None = None,
        *,
        filename: str = "edoc.edxml",
    ) -> SentEdoc:
        """Submit a document or status message as the multipart file ``edocFile``."""
        headers = {"Idempotency-Key": idempotency_key} if idempotency_key else {}
        body = await self._call(
            "sendEdoc",
            files={"edocFile": (filename, raw_edxml, "application/xml")},
            data={"messagetype": messagetype},
            headers=headers,
        )
        doc_id = body.get("docId")
        if not isinstance(doc_id, str) or not doc_id:
            raise ProvincialAxisError("sendEdoc", "answer has no docId", retriable=True, excerpt=json_excerpt(body))
        return SentEdoc(doc_id=doc_id, duplicate=bool(body.get("duplicate", False)))

    async def sync_received_edoc_list(self) -> list[ReceivedEdoc]:
        """What waits for our system: documents and status messages not yet marked DONE or FAIL."""
        body = await self._call("syncReceivedEdocList", json_body={})
        data = body.get("data", [])
        if not isinstance(data, list):
            raise ProvincialAxisError(
                "syncReceivedEdocList", "answer data is not a list", retriable=True, excerpt=json_excerpt(body)
            )
        return [
            ReceivedEdoc(
                doc_id=item["docId"],
                messagetype=str(item.get("messagetype", "edoc")),
                sender=item.get("from"),
                raw=item,
            )
            for item in data
            if isinstance(item, dict) and isinstance(item.get("docId"), str)
        ]

    async def get_edoc(self, doc_id: str) -> bytes:
        """The raw packet of one received item (sent base64-encoded)."""
        return self._packet(await self._call("getEdoc", json_body={"docId": doc_id}))

    async def update_status(self, doc_id: str, status: LgspStatus) -> None:
        """Set the transport status of a received item: INITIAL, PROCESSING, DONE or FAIL."""
        await self._call("updateStatus", json_body={"docId": doc_id, "status": status})

    async def _call(
        self,
        operation: str,
        *,
        json_body: dict[str, Any] | None = None,
        files: dict[str, tuple[str, bytes, str]] | None = None,
        data: dict[str, str] | None = None,
        headers: dict[str, str] | None = None,
    ) -> dict[str, Any]:
        for fresh_login in (False, True):
            token = await self._current_token(force=fresh_login)
            try:
                response = await self._post(
                    operation,
                    json=json_body,
                    files=files,
                    data=data,
                    headers={**(headers or {}), "Authorization": f"Bearer {token}"},
                )
                return _answer(operation, response, unauthorized_is_final=fresh_login)
            except _Unauthorized as refused:
                if fresh_login:
                    raise refused.error from None
        raise AssertionError("unreachable")  # pragma: no cover

    async def _current_token(self, *, force: bool) -> str:
        async with self._login_lock:
            if force or self._token is None or time.monotonic() >= self._renew_at:
                await self._login()
            assert self._token is not None
            return self._token

    async def _login(self) -> None:
        self._token = None
        response = await self._post("login", json={"systemId": self.system_id, "secret": self._secret})
        body = _answer("login", response, unauthorized_is_final=True)
        token, expires_in = body.get("token"), body.get("expiresIn", 3600)
        if not isinstance(token, str) or not token or not isinstance(expires_in, int | float):
            raise ProvincialAxisError("login", "answer has no token", retriable=True, excerpt=json_excerpt(body))
        # Renew a little early so a token never expires between our check and the platform's.
        self._renew_at = time.monotonic() + max(0.0, float(expires_in) - min(30.0, float(expires_in) / 10))
        self._token = token


def _answer(operation: str, response: httpx.Response, *, unauthorized_is_final: bool) -> dict[str, Any]:
    """The JSON body of a successful answer; raise :class:`ProvincialAxisError` (or ask for a fresh login)."""
    body = json_object(response)
    code = _code(body)
    if body is not None and response.is_success and body.get("status") == "OK" and code in (None, OK):
        return body
    shown = None if code is None else f"{code} ({ERROR_MEANINGS.get(code, 'unknown code')})"
    error = ProvincialAxisError(
        operation,
        failure_reason(response, body, shown),
        retriable=answer_is_retriable(response.status_code, code),
        http_status=response.status_code,
        error_code=code,
        excerpt=response.text[:500],
    )
    if (response.status_code == 401 or code == BAD_CREDENTIALS) and not unauthorized_is_final:
        raise _Unauthorized(error)
    raise error


def _code(body: dict[str, Any] | None) -> int | None:
    if body is None or body.get("ErrorCode") is None:
        return None
    try:
        return int(body["ErrorCode"])
    except (TypeError, ValueError):
        return -1
