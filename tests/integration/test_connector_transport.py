"""The connectors' default httpx transport (aiohttp underneath) against a real HTTP server on loopback.

It must behave like httpx's own transport wherever the connectors depend on it: bodies and headers both ways,
no redirects followed, compressed answers decoded, and failures raised as the httpx errors the connectors map to
retriable delivery errors. The axis clients' plain POSTs skip httpx's request building and call the transport
directly; the server must not be able to tell.
"""

from __future__ import annotations

import asyncio
import contextlib
import gzip
import socket
from collections.abc import AsyncIterator
from typing import Any

import httpx
import pytest
from aiohttp import web

from docbus.connectors.national_axis import NationalAxisClient
from docbus.connectors.transport import AiohttpTransport


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

    app = web.Application()
    app.router.add_post("/echo", echo)
    app.router.add_post("/moved", moved)
    app.router.add_post("/slow", slow)
    app.router.add_get("/zipped", zipped)
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
