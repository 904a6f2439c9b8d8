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
raised as the ``httpx.TransportError`` subclasses callers already handle. Bodies come back as received
(``Content-Encoding`` is left to httpx, as with its own transport).
"""

from __future__ import annotations

from typing import Any

import aiohttp
import httpx

# Computed by aiohttp from the body and the URL; passing httpx's copies too would send them twice.
_SKIPPED_HEADERS = frozenset({b"host", b"content-length", b"transfer-encoding"})


class AiohttpTransport(httpx.AsyncBaseTransport):
    """Sends each request over one pooled ``aiohttp.ClientSession`` (created in the loop that first uses it)."""

    def __init__(self, *, max_connections: int = 100) -> None:
        self._max_connections = max_connections
        self._session: aiohttp.ClientSession | None = None

    def _current_session(self) -> aiohttp.ClientSession:
        if self._session is None or self._session.closed:
            self._session = aiohttp.ClientSession(
                connector=aiohttp.TCPConnector(limit=self._max_connections),
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
                content = await answer.read()
                return httpx.Response(
                    answer.status,
                    headers=[(name.decode("latin-1"), value.decode("latin-1")) for name, value in answer.raw_headers],
                    content=content,
                    request=request,
                )
        except aiohttp.ConnectionTimeoutError as exc:
            raise httpx.ConnectTimeout(str(exc) or "connect timed out", request=request) from exc
        except (TimeoutError, aiohttp.SocketTimeoutError) as exc:
            raise httpx.ReadTimeout(str(exc) or "read timed out", request=request) from exc
        except aiohttp.ClientConnectorError as exc:
            raise httpx.ConnectError(str(exc), request=request) from exc
        except (aiohttp.ServerDisconnectedError, aiohttp.ClientPayloadError) as exc:
            raise httpx.RemoteProtocolError(str(exc) or type(exc).__name__, request=request) from exc
        except aiohttp.ClientError as exc:
            raise httpx.ReadError(str(exc) or type(exc).__name__, request=request) from exc

    async def aclose(self) -> None:
        if self._session is not None:
            await self._session.close()
            self._session = None
