"""An httpx transport that sends requests with aiohttp: the connectors keep httpx's API, at half its CPU cost.

Forwarding is one POST per document per destination, so the HTTP client's CPU is the delivery worker's largest
cost. Measured on loopback with 10 KB bodies, one client CPU per request: httpx with its own transport (httpcore)
about 0.9 ms, httpx over this transport about 0.45 ms, aiohttp alone about 0.25 ms. The connectors' code, their
error mapping and their tests (which pass ``httpx.MockTransport``) stay as they are; only the default transport
changes. The axis clients go one step further for their plain POSTs (one per delivered document): they call
:meth:`AiohttpTransport.send` with the headers httpx would have sent and get the same ``httpx.Response`` and the
same errors back, without httpx building a request.

What httpx would otherwise do below the client is done here: connect/read timeouts from the request's
``timeout`` extension, no redirects and no cookie jar (httpx's client handles both), and aiohttp's failures
raised as the ``httpx.TransportError`` subclasses callers already handle.

An answer is untrusted input like any request: an axis or a webhook receiver that is broken or hostile could send
gigabytes, or a few kilobytes of gzip that inflate to gigabytes, and neither aiohttp nor httpx bounds what it
reads or decodes. So every answer is held to ``max_response_bytes`` (64 MiB by default, the gateway's own body
cap), as sent and once decoded: a declared ``Content-Length`` over it is refused before the body is read, a body
without one is read until it passes the cap and no further, and gzip or deflate (the encodings httpx asks for
and decodes) is decoded here, never past the cap, so the answer reaches httpx without ``Content-Encoding``.
Other encodings come back as received, as with httpx's own transport. Over the cap, :class:`ResponseTooLarge`.
"""

from __future__ import annotations

import errno
import ssl
import zlib
from typing import Any

import aiohttp
import httpx

# Computed by aiohttp from the body and the URL; passing httpx's copies too would send them twice.
_SKIPPED_HEADERS = frozenset({b"host", b"content-length", b"transfer-encoding"})
# Describe the body as sent; once it is decoded here they no longer hold.
_ENCODING_HEADERS = frozenset({"content-encoding", "content-length"})
MAX_RESPONSE_BYTES = 64 * 1024 * 1024
RESET_OVER_TLS = (
    " (over TLS this is also how a server that requires a client certificate refuses a missing or unaccepted one:"
    " see cert_file)"
)
_ZLIB_WBITS = {"gzip": zlib.MAX_WBITS | 16, "x-gzip": zlib.MAX_WBITS | 16, "deflate": zlib.MAX_WBITS}


class ResponseTooLarge(httpx.RemoteProtocolError):
    """An answer larger than the transport's cap, as sent or once decoded; nothing past the cap was kept."""


class CertificateRefused(httpx.ConnectError):
    """The server's certificate failed the check (not trusted, wrong host name, expired): nothing was sent."""


class TlsFailed(httpx.ConnectError):
    """The TLS handshake failed for another reason (e.g. the server wanted a client certificate): nothing sent."""


class AiohttpTransport(httpx.AsyncBaseTransport):
    """Sends each request over one pooled ``aiohttp.ClientSession`` (created in the loop that first uses it)."""

    def __init__(
        self,
        *,
        max_connections: int = 100,
        max_response_bytes: int = MAX_RESPONSE_BYTES,
        ssl_context: ssl.SSLContext | None = None,
    ) -> None:
        """``ssl_context``: how ``https://`` servers are checked and what certificate is shown to them
        (``docbus.adapters.tls``); ``None``: the system's CAs, no client certificate."""
        if max_response_bytes < 1:
            raise ValueError("max_response_bytes must be at least 1")
        self._max_connections = max_connections
        self.max_response_bytes = max_response_bytes
        self._ssl: ssl.SSLContext | bool = ssl_context if ssl_context is not None else True
        self._session: aiohttp.ClientSession | None = None

    def _current_session(self) -> aiohttp.ClientSession:
        if self._session is None or self._session.closed:
            self._session = aiohttp.ClientSession(
                connector=aiohttp.TCPConnector(limit=self._max_connections, ssl=self._ssl),
                cookie_jar=aiohttp.DummyCookieJar(),
                auto_decompress=False,
                # httpx already set these (or chose not to): aiohttp must not add its own.
                skip_auto_headers=("User-Agent", "Accept", "Accept-Encoding", "Content-Type"),
            )
        return self._session

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        body = await request.aread()
        headers = [
            (name.decode("latin-1"), value.decode("latin-1"))
            for name, value in request.headers.raw
            if name.lower() not in _SKIPPED_HEADERS
        ]
        timeouts: dict[str, Any] = request.extensions.get("timeout", {})
        return await self.send(
            request.method,
            str(request.url),
            headers,
            body,
            connect_timeout=timeouts.get("connect"),
            read_timeout=timeouts.get("read"),
            request=request,
        )

    async def send(
        self,
        method: str,
        url: str,
        headers: list[tuple[str, str]],
        body: bytes | None,
        *,
        connect_timeout: float | None,
        read_timeout: float | None,
        request: httpx.Request | None = None,
    ) -> httpx.Response:
        """Send one request as given (headers complete, body encoded) and answer as httpx would, failures
        included. ``AxisClient`` calls this directly for its plain POSTs: building an ``httpx.Request`` (URL
        parsing, header merging, the cookie jar) cost more CPU than aiohttp's whole exchange."""
        timeout = aiohttp.ClientTimeout(total=None, connect=connect_timeout, sock_read=read_timeout)
        try:
            async with self._current_session().request(
                method, url, headers=headers, data=body or None, allow_redirects=False, timeout=timeout
            ) as answer:
                content = await self._bounded_body(answer, request)
                headers = [(name.decode("latin-1"), value.decode("latin-1")) for name, value in answer.raw_headers]
                encodings = _zlib_encodings(answer.headers.get("Content-Encoding"))
                if encodings:
                    content = self._decoded(content, encodings, request)
                    headers = [(name, value) for name, value in headers if name.lower() not in _ENCODING_HEADERS]
                return httpx.Response(answer.status, headers=headers, content=content, request=request)
        except aiohttp.ClientConnectorCertificateError as exc:
            raise CertificateRefused(_certificate_problem(exc), request=request) from exc
        except aiohttp.ClientSSLError as exc:
            raise TlsFailed(f"TLS handshake failed: {_tls_reason(exc)}", request=request) from exc
        except aiohttp.ConnectionTimeoutError as exc:
            raise httpx.ConnectTimeout(str(exc) or "connect timed out", request=request) from exc
        except (TimeoutError, aiohttp.SocketTimeoutError) as exc:
            raise httpx.ReadTimeout(str(exc) or "read timed out", request=request) from exc
        except aiohttp.ClientConnectorError as exc:
            raise httpx.ConnectError(str(exc), request=request) from exc
        except (aiohttp.ServerDisconnectedError, aiohttp.ClientPayloadError) as exc:
            raise httpx.RemoteProtocolError(str(exc) or type(exc).__name__, request=request) from exc
        except aiohttp.ClientError as exc:
            reason = str(exc) or type(exc).__name__
            if isinstance(exc, aiohttp.ClientOSError) and exc.errno == errno.ECONNRESET and url.startswith("https:"):
                # Under TLS 1.3 a server that refuses the client's certificate (or its absence) does so after the
                # client's handshake is done, and its alert is usually lost in the reset: say what it may mean.
                reason += RESET_OVER_TLS
            raise httpx.ReadError(reason, request=request) from exc

    async def _bounded_body(self, answer: aiohttp.ClientResponse, request: httpx.Request | None) -> bytes:
        cap = self.max_response_bytes
        declared = answer.content_length
        if declared is not None:
            if declared > cap:
                raise ResponseTooLarge(
                    f"the answer declares {declared} bytes, over the {cap}-byte cap", request=request
                )
            return await answer.read()  # aiohttp reads exactly the declared length
        received = bytearray()
        async for chunk in answer.content.iter_any():
            received += chunk
            if len(received) > cap:
                raise ResponseTooLarge(f"the answer ran past the {cap}-byte cap", request=request)
        return bytes(received)

    def _decoded(self, content: bytes, encodings: list[str], request: httpx.Request | None) -> bytes:
        """Undo gzip/deflate, the last applied first, never producing more than the cap."""
        for encoding in reversed(encodings):
            if encoding != "identity":
                content = _decode_one(content, encoding, self.max_response_bytes, request)
        return content

    async def aclose(self) -> None:
        if self._session is not None:
            await self._session.close()
            self._session = None


class _Overflow(Exception):
    pass


def _decode_one(content: bytes, encoding: str, cap: int, request: httpx.Request | None) -> bytes:
    # "deflate" is often sent raw, without its zlib header; httpx accepts both, so this does too.
    attempts = [_ZLIB_WBITS[encoding], -zlib.MAX_WBITS] if encoding == "deflate" else [_ZLIB_WBITS[encoding]]
    failure: zlib.error | None = None
    for wbits in attempts:
        try:
            return _inflate(content, wbits, cap)
        except zlib.error as exc:
            failure = exc
        except _Overflow:
            raise ResponseTooLarge(f"the {encoding} answer decodes past the {cap}-byte cap", request=request) from None
    raise httpx.RemoteProtocolError(f"the {encoding} answer cannot be decoded: {failure}", request=request)


def _inflate(data: bytes, wbits: int, cap: int) -> bytes:
    decoder = zlib.decompressobj(wbits)
    out = decoder.decompress(data, cap + 1)
    if len(out) > cap or decoder.unconsumed_tail:
        raise _Overflow
    out += decoder.flush()
    if len(out) > cap:
        raise _Overflow
    return out


def _zlib_encodings(header: str | None) -> list[str]:
    """The encodings to undo here: all of them when each is gzip, deflate or identity, else none (left as sent)."""
    if not header:
        return []
    names = [name.strip().lower() for name in header.split(",") if name.strip()]
    if any(name not in _ZLIB_WBITS and name != "identity" for name in names):
        return []
    return names if any(name != "identity" for name in names) else []


def _certificate_problem(exc: aiohttp.ClientConnectorCertificateError) -> str:
    """``the server's TLS certificate is not trusted: <OpenSSL's verdict>``, without aiohttp's connection dump."""
    error = exc.certificate_error
    verdict = getattr(error, "verify_message", None) or getattr(error, "reason", None) or str(error)
    return f"the server's TLS certificate failed the check: {verdict}"


def _tls_reason(exc: aiohttp.ClientSSLError) -> str:
    """OpenSSL's reason (e.g. ``TLSV13_ALERT_CERTIFICATE_REQUIRED``), or aiohttp's whole message."""
    reason = getattr(exc.os_error, "reason", None)
    return str(reason) if reason else str(exc)
