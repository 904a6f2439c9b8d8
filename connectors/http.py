"""What the HTTP clients in ``docbus.connectors`` share, so that each module holds only its own wire protocol.

- :class:`HttpClientOwner`: a client that owns one ``httpx.AsyncClient``; ``async with`` and ``aclose`` close it.
- :class:`AxisClient`: the base of the two axis clients (national VXP, provincial LGSP). Both are registered
  there as one system (``system_id`` + ``secret``), post every operation to ``{url}/{operation}``, turn timeouts
  and transport errors into a retriable :class:`AxisError`, and get received packets back base64-encoded.
- :class:`AxisError`: the failure both raise, with a ``retriable`` flag and the axis' answer (HTTP status,
  ErrorCode, an excerpt), which the adapters map onto delivery errors the same way for either axis.
- :func:`json_object`, :func:`failure_reason`, :func:`json_excerpt`: reading the axes' JSON answers, which
  have the same ``{"status", "ErrorCode", "ErrorDesc"}`` shape on both.
"""

from __future__ import annotations

import base64
import binascii
import json
import ssl
from abc import ABC, abstractmethod
from types import TracebackType
from typing import Any, ClassVar, Generic, Self, TypeVar

import httpx

from docbus.connectors.transport import (
    MAX_RESPONSE_BYTES,
    AiohttpTransport,
    CertificateRefused,
    ResponseTooLarge,
    TlsFailed,
)

CodeT = TypeVar("CodeT", str, int)  # how an axis writes its ErrorCodes


class AxisError(Exception, Generic[CodeT]):
    """Raised when an axis did not do what was asked; ``retriable`` says whether trying again can help."""

    axis: ClassVar[str]  # how messages name the axis, e.g. "national axis"

    def __init__(
        self,
        operation: str,
        reason: str,
        *,
        retriable: bool,
        http_status: int | None = None,
        error_code: CodeT | None = None,
        excerpt: str | None = None,
    ) -> None:
        super().__init__(f"{self.axis} {operation}: {reason}")
        self.operation = operation
        self.reason = reason
        self.retriable = retriable
        self.http_status = http_status
        self.error_code: CodeT | None = error_code
        self.excerpt = excerpt


class HttpClientOwner:
    """Owns the ``httpx.AsyncClient`` in ``_http``: leaving ``async with`` or calling ``aclose`` closes it."""

    _http: httpx.AsyncClient

    async def __aenter__(self) -> Self:
        return self

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        await self.aclose()

    async def aclose(self) -> None:
        await self._http.aclose()


class AxisClient(HttpClientOwner, ABC):
    """Base of the axis clients: one registered system (``system_id`` + ``secret``) posting to ``{url}/{operation}``.

    Subclasses set ``error`` (the :class:`AxisError` they raise) and implement their operations.
    """

    error: ClassVar[type[AxisError[Any]]]

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
        """``ssl_context``: the checks and client certificate for an ``https://`` axis (the system's CAs when
        ``None``); used by the default transport, not by one passed as ``transport``."""
        self.url = url.rstrip("/")
        self.system_id = system_id
        self._secret = secret
        self._timeout = timeout
        self._connect_timeout = connect_timeout
        # The aiohttp transport, unless the caller passed another (then every request goes through httpx).
        chosen = transport or AiohttpTransport(max_response_bytes=max_response_bytes, ssl_context=ssl_context)
        self._direct: AiohttpTransport | None = chosen if isinstance(chosen, AiohttpTransport) else None
        self._http = httpx.AsyncClient(
            timeout=httpx.Timeout(timeout, connect=connect_timeout),
            transport=chosen,
            follow_redirects=False,
        )
        # httpx's defaults (Accept, Accept-Encoding, User-Agent, ...) for requests that bypass it (``_post``).
        self._default_headers = list(self._http.headers.items())

    @abstractmethod
    async def get_edoc(self, doc_id: str) -> bytes:
        """The raw packet of one received item."""

    async def _post(
        self,
        operation: str,
        *,
        headers: dict[str, str] | None = None,
        content: bytes | None = None,
        json: Any = None,
        **kwargs: Any,
    ) -> httpx.Response:
        """``POST {url}/{operation}``; timeouts and transport errors raise a retriable ``error``.

        A body of bytes or JSON goes straight to the aiohttp transport with the headers httpx would have sent
        (forwarding makes one such call per document); multipart forms, and any other transport (tests pass
        ``httpx.MockTransport``), go through httpx."""
        url = f"{self.url}/{operation}"
        kwargs = {name: value for name, value in kwargs.items() if value is not None}  # files=None: no form
        try:
            if self._direct is not None and not kwargs:
                return await self._direct.send(
                    "POST",
                    url,
                    self._direct_headers(headers, json_body=json is not None),
                    _json_bytes(json) if json is not None else content,
                    connect_timeout=self._connect_timeout,
                    read_timeout=self._timeout,
                )
            return await self._http.post(url, headers=headers, content=content, json=json, **kwargs)
        except httpx.TimeoutException as exc:
            raise self.error(operation, f"timed out ({type(exc).__name__})", retriable=True) from exc
        except ResponseTooLarge as exc:
            # The axis may have done what was asked: trying again (same idempotency key) is safe.
            raise self.error(operation, f"answer refused: {exc}", retriable=True) from exc
        except (CertificateRefused, TlsFailed) as exc:
            # Retriable: the axis' certificate may be mid-renewal, or our CA file about to be fixed; the breaker
            # and the retry policy bound the attempts, and every attempt's reason names TLS, not "unreachable".
            raise self.error(operation, str(exc), retriable=True) from exc
        except httpx.TransportError as exc:
            raise self.error(operation, f"unreachable ({type(exc).__name__}: {exc})", retriable=True) from exc

    def _direct_headers(self, headers: dict[str, str] | None, *, json_body: bool) -> list[tuple[str, str]]:
        """The request's headers over httpx's defaults, as httpx would merge them."""
        given = {name.lower() for name in headers or ()}
        merged = [(name, value) for name, value in self._default_headers if name.lower() not in given]
        if json_body and "content-type" not in given:
            merged.append(("Content-Type", "application/json"))
        merged.extend((headers or {}).items())
        return merged

    def _packet(self, body: dict[str, Any]) -> bytes:
        """The packet in a ``getEdoc`` answer: ``data.content``, base64-encoded."""
        data = body.get("data")
        content = data.get("content") if isinstance(data, dict) else None
        if not isinstance(content, str):
            raise self.error("getEdoc", "answer has no content", retriable=True, excerpt=json_excerpt(body))
        try:
            return base64.b64decode(content, validate=True)
        except (binascii.Error, ValueError) as exc:
            raise self.error("getEdoc", "content is not base64", retriable=True) from exc


def _json_bytes(value: Any) -> bytes:
    """JSON as httpx encodes a ``json=`` body: compact, UTF-8, no NaN."""
    return json.dumps(value, ensure_ascii=False, separators=(",", ":"), allow_nan=False).encode("utf-8")


def json_object(response: httpx.Response) -> dict[str, Any] | None:
    """The answer's body if it is a JSON object, else ``None``."""
    try:
        parsed = response.json()
    except ValueError:
        return None
    return parsed if isinstance(parsed, dict) else None


def failure_reason(response: httpx.Response, body: dict[str, Any] | None, code: str | None) -> str:
    """``HTTP <status>[, ErrorCode <code>][: <ErrorDesc>]`` for an unsuccessful answer (``code`` as shown)."""
    reason = f"HTTP {response.status_code}"
    if code is not None:
        reason += f", ErrorCode {code}"
    desc = body.get("ErrorDesc") if body is not None else None
    if desc:
        reason += f": {desc}"
    elif body is None:
        reason += ": answer is not a JSON object"
    return reason


def json_excerpt(body: dict[str, Any]) -> str:
    """The first 500 characters of ``body`` as JSON, for error reports."""
    return json.dumps(body, ensure_ascii=False)[:500]
