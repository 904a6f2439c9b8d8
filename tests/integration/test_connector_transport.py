"""The connectors' default httpx transport (aiohttp underneath) against a real HTTP server on loopback.

It must behave like httpx's own transport wherever the connectors depend on it: bodies and headers both ways,
no redirects followed, compressed answers decoded, and failures raised as the httpx errors the connectors map to
retriable delivery errors. The axis clients' plain POSTs skip httpx's request building and call the transport
directly; the server must not be able to tell. Unlike httpx, it holds every answer to a size cap, as sent and
once decoded, so a broken or hostile server cannot fill the worker's memory.
"""

from __future__ import annotations

import asyncio
import contextlib
import gzip
import socket
import tracemalloc
import zlib
from collections.abc import AsyncIterator
from datetime import UTC, datetime
from typing import Any

import httpx
import pytest
from aiohttp import web

from docbus.adapters.base import Outbound, RetriableDeliveryError
from docbus.adapters.webhook import WebhookAdapter, WebhookSettings
from docbus.connectors.national_axis import NationalAxisClient, NationalAxisError
from docbus.connectors.transport import AiohttpTransport, ResponseTooLarge
from docbus.envelope import Envelope, MessageKind, SchemaRef

CAP = 1024 * 1024
BOMB = gzip.compress(bytes(50 * CAP))  # about 50 KB that inflate to 50 MiB


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


Seen = list[tuple[str, dict[str, str], bytes]]  # (path, headers, body) of each request the server got


@pytest.fixture
async def server() -> AsyncIterator[str]:
    async with serving() as (url, _seen):
        yield url


@contextlib.asynccontextmanager
async def serving() -> AsyncIterator[tuple[str, Seen]]:
    seen: Seen = []

    async def echo(request: web.Request) -> web.Response:
        body = await request.read()
        seen.append((request.path, dict(request.headers), body))
        return web.json_response(
            {"path": request.path, "size": len(body), "signature": request.headers.get("X-Signature")},
            status=201,
            headers={"X-Answer": "yes"},
        )

    async def moved(_request: web.Request) -> web.Response:
        return web.Response(status=302, headers={"Location": "/echo"})

    async def slow(_request: web.Request) -> web.Response:
        await asyncio.sleep(2)
        return web.Response(text="late")

    async def zipped(_request: web.Request) -> web.Response:
        return web.Response(body=gzip.compress(b'{"ok": true}'), headers={"Content-Encoding": "gzip"})

    async def deflated(request: web.Request) -> web.Response:
        packed = zlib.compress(b'{"ok": true}')
        if request.query.get("raw"):  # deflate without its zlib header, as some servers send it
            packed = packed[2:-4]
        return web.Response(body=packed, headers={"Content-Encoding": "deflate"})

    async def brotli(_request: web.Request) -> web.Response:
        return web.Response(body=b"not decoded here", headers={"Content-Encoding": "br"})

    async def bomb(request: web.Request) -> web.Response:
        await request.read()
        return web.Response(body=BOMB, headers={"Content-Encoding": "gzip", "Content-Type": "application/json"})

    async def declared(_request: web.Request) -> web.Response:
        return web.Response(body=bytes(2 * CAP))  # Content-Length: 2 MiB

    async def unsized(request: web.Request) -> web.StreamResponse:
        """Chunked, no length: 64 MiB unless the client hangs up first."""
        await request.read()
        answer = web.StreamResponse(headers={"Content-Type": "application/json"})
        await answer.prepare(request)
        seen.append((request.path, dict(request.headers), b""))
        with contextlib.suppress(ConnectionError):
            for _ in range(1024):
                await answer.write(b"[" * 65536)
            await answer.write_eof()
        return answer

    app = web.Application()
    app.router.add_post("/echo", echo)
    app.router.add_post("/moved", moved)
    app.router.add_post("/slow", slow)
    app.router.add_get("/zipped", zipped)
    app.router.add_get("/deflated", deflated)
    app.router.add_get("/brotli", brotli)
    app.router.add_post("/bomb", bomb)
    app.router.add_get("/declared", declared)
    app.router.add_post("/unsized", unsized)
    app.router.add_post("/sendEdoc", unsized)
    runner = web.AppRunner(app)
    await runner.setup()
    port = free_port()
    site = web.TCPSite(runner, "127.0.0.1", port)
    await site.start()
    try:
        yield f"http://127.0.0.1:{port}", seen
    finally:
        await runner.cleanup()


async def test_bodies_and_headers_travel_both_ways(server: str) -> None:
    async with httpx.AsyncClient(transport=AiohttpTransport()) as client:
        body = b"<edXML>" + b"x" * 20_000 + b"</edXML>"
        for _ in range(3):  # the pooled connection is reused
            answer = await client.post(f"{server}/echo", content=body, headers={"X-Signature": "abc"})
            assert answer.status_code == 201
            assert answer.headers["x-answer"] == "yes"
            assert answer.json() == {"path": "/echo", "size": len(body), "signature": "abc"}
        form = await client.post(f"{server}/echo", files={"file": ("doc.edxml", b"<a/>", "application/xml")})
        assert form.json()["size"] > len(b"<a/>")  # multipart framing arrived with the file


async def test_redirects_are_answers_not_followed(server: str) -> None:
    async with httpx.AsyncClient(transport=AiohttpTransport(), follow_redirects=False) as client:
        answer = await client.post(f"{server}/moved", content=b"x")
    assert answer.status_code == 302
    assert answer.headers["location"] == "/echo"


async def test_compressed_answers_are_decoded(server: str) -> None:
    async with httpx.AsyncClient(transport=AiohttpTransport()) as client:
        answer = await client.get(f"{server}/zipped")
    assert answer.json() == {"ok": True}


async def test_failures_are_httpx_transport_errors(server: str) -> None:
    async with httpx.AsyncClient(transport=AiohttpTransport(), timeout=httpx.Timeout(0.3)) as client:
        with pytest.raises(httpx.ReadTimeout):
            await client.post(f"{server}/slow", content=b"x")
        with pytest.raises(httpx.ConnectError):
            await client.post(f"http://127.0.0.1:{free_port()}/echo", content=b"x")


@pytest.mark.parametrize("body", [{"json": {"DocId": "Đ-1", "status": "done"}}, {"content": b"<edXML/>"}])
async def test_an_axis_client_post_sends_what_httpx_would(body: dict[str, Any]) -> None:
    headers = {"systemid": "docbus", "X-Signature": "abc", "Content-Type": "application/xml"}
    if "json" in body:
        del headers["Content-Type"]
    async with serving() as (url, seen):
        async with httpx.AsyncClient(transport=AiohttpTransport()) as plain:
            through_httpx = await plain.post(f"{url}/echo", headers=headers, **body)
        async with NationalAxisClient(url, "docbus", "secret") as client:
            direct = await client._post("echo", headers=headers, **body)
    assert (direct.status_code, direct.json(), direct.headers["X-Answer"]) == (
        through_httpx.status_code,
        through_httpx.json(),
        "yes",
    )
    (path_a, headers_a, body_a), (path_b, headers_b, body_b) = seen
    assert (path_b, body_b) == (path_a, body_a)
    assert {k.lower(): v for k, v in headers_b.items()} == {k.lower(): v for k, v in headers_a.items()}


@pytest.mark.parametrize("query", ["", "?raw=1"])
async def test_deflated_answers_are_decoded_with_or_without_their_zlib_header(server: str, query: str) -> None:
    async with httpx.AsyncClient(transport=AiohttpTransport()) as client:
        answer = await client.get(f"{server}/deflated{query}")
    assert answer.json() == {"ok": True}
    assert "content-encoding" not in answer.headers  # decoded here: httpx must not decode it again


async def test_an_encoding_httpx_does_not_decode_is_passed_on_as_sent(server: str) -> None:
    async with httpx.AsyncClient(transport=AiohttpTransport()) as client:
        answer = await client.get(f"{server}/brotli")
    assert (answer.content, answer.headers["content-encoding"]) == (b"not decoded here", "br")


async def test_a_declared_length_over_the_cap_is_refused_before_reading(server: str) -> None:
    async with httpx.AsyncClient(transport=AiohttpTransport(max_response_bytes=CAP)) as client:
        with pytest.raises(ResponseTooLarge, match=f"declares {2 * CAP} bytes"):
            await client.get(f"{server}/declared")
    async with httpx.AsyncClient(transport=AiohttpTransport(max_response_bytes=2 * CAP)) as client:
        assert len((await client.get(f"{server}/declared")).content) == 2 * CAP  # exactly the cap is fine


async def test_an_answer_without_a_length_is_cut_at_the_cap() -> None:
    transport = AiohttpTransport(max_response_bytes=CAP)
    async with serving() as (url, seen), httpx.AsyncClient(transport=transport) as client:
        with pytest.raises(ResponseTooLarge, match="ran past"):
            await client.post(f"{url}/unsized", content=b"x")
        # The connection was dropped, not kept for reuse: the next request gets a fresh, working one.
        assert (await client.post(f"{url}/echo", content=b"y")).json()["size"] == 1
    assert [path for path, _, _ in seen] == ["/unsized", "/echo"]


async def test_a_gzip_bomb_is_refused_without_inflating_it(server: str) -> None:
    async with httpx.AsyncClient(transport=AiohttpTransport(max_response_bytes=CAP)) as client:
        tracemalloc.start()
        try:
            with pytest.raises(ResponseTooLarge, match="gzip answer decodes past"):
                await client.post(f"{server}/bomb", content=b"x")
            _, peak = tracemalloc.get_traced_memory()
        finally:
            tracemalloc.stop()
    assert peak < 8 * CAP  # httpx's own decoding would have held all 50 MiB


async def test_an_axis_answer_over_the_cap_fails_the_call_as_retriable(server: str) -> None:
    async with NationalAxisClient(server, "docbus", "secret", max_response_bytes=CAP) as client:
        with pytest.raises(NationalAxisError) as raised:
            await client.send_edoc(b"<edXML/>", "edoc", "000.00.00.G22", idempotency_key="01JX")
    assert raised.value.retriable
    assert "answer refused" in raised.value.reason and "cap" in raised.value.reason


async def test_a_webhook_answer_over_the_cap_is_a_retriable_failure(server: str) -> None:
    settings = WebhookSettings.model_validate(
        {"url": f"{server}/bomb", "secret": "webhook-shared-secret", "max_response_bytes": CAP}
    )
    payload = b"<edXML/>"
    envelope = Envelope(
        message_id="01JDOCBUSWEBHOOKCAP0000001",
        kind=MessageKind.EDOC,
        schema=SchemaRef("qcvn102.edoc", "2016.1"),
        sender="000.00.00.G22",
        receivers=("000.00.00.H41",),
        business_id="000.00.00.G22,2015/09/30,7816/VPCP-TTĐT",
        sha256="0" * 64,
        size=len(payload),
        received_at=datetime.now(UTC),
        content_type="application/xml",
        idempotency_key=None,
        trace_id="0" * 32,
    )
    adapter = WebhookAdapter(settings)
    try:
        with pytest.raises(RetriableDeliveryError, match="webhook answer refused"):
            await adapter.deliver(Outbound(envelope, payload, destination="hook", receivers=envelope.receivers))
    finally:
        await adapter.aclose()
