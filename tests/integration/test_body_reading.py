"""Clients that are slow, gone or many at once, over real sockets to a real gateway on SQLite and PostgreSQL.

A body that stops arriving, or never finishes, gets 408 and a closed connection; a client that disconnects
half-way is counted and leaves no traceback; the bodies a process holds at once stay under its memory budget,
and past it a request gets 503 busy with Retry-After. Nothing of any of them is stored.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager, contextmanager
from pathlib import Path
from urllib.parse import urlsplit

import orjson
import pytest

from docbus.settings import Settings

from ..conftest import RunningGateway
from .helpers import row_counts, sender_of, with_unique_document_id

SENDER = "000.00.00.G22"
XML = {"Content-Type": "application/xml"}
MIB = 1024 * 1024


@pytest.fixture
def gateway_settings(tmp_path: Path, database_url: str, request: pytest.FixtureRequest) -> Settings:
    """Short deadlines, for the tests that wait for them; ``(idle, read)`` seconds through indirect
    parametrization for a test whose clients must not time out while it works."""
    idle, read = getattr(request, "param", (0.5, 2.0))
    return Settings(
        data_dir=tmp_path / "data",
        database_url=database_url,
        max_body_bytes=2 * MIB,
        inflight_body_bytes=3 * MIB,
        body_idle_timeout_seconds=idle,
        body_read_timeout_seconds=read,
    )


class RawConnection:
    """One HTTP/1.1 connection driven by hand, so a test can stop half-way through a body."""

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.reader, self.writer = reader, writer

    async def send(self, data: bytes) -> None:
        self.writer.write(data)
        await self.writer.drain()

    async def answer(self, timeout: float = 10.0) -> tuple[int, dict[str, str], bytes]:
        async with asyncio.timeout(timeout):
            status_line = await self.reader.readline()
            headers: dict[str, str] = {}
            while (line := await self.reader.readline()) not in (b"\r\n", b""):
                name, _, value = line.decode().partition(":")
                headers[name.strip().lower()] = value.strip()
            body = await self.reader.readexactly(int(headers.get("content-length", "0")))
        return int(status_line.split()[1]), headers, body

    async def closed_by_server(self, timeout: float = 5.0) -> bool:
        async with asyncio.timeout(timeout):
            return await self.reader.read(1) == b""


@asynccontextmanager
async def raw_post(gateway: RunningGateway, content_length: int | None) -> AsyncIterator[RawConnection]:
    """A connection that has sent the head of an intake POST (``Content-Length`` or chunked) and nothing more."""
    url = urlsplit(gateway.base_url)
    reader, writer = await asyncio.open_connection(url.hostname, url.port)
    framing = f"Content-Length: {content_length}" if content_length is not None else "Transfer-Encoding: chunked"
    head = (
        "POST /v1/messages HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/xml\r\n"
        f"Authorization: Bearer {gateway.keys[SENDER]}\r\n{framing}\r\n\r\n"
    )
    writer.write(head.encode())
    await writer.drain()
    try:
        yield RawConnection(reader, writer)
    finally:
        writer.close()
        await asyncio.gather(writer.wait_closed(), return_exceptions=True)


async def post_a_sample(gateway: RunningGateway, sample_bytes: dict[str, bytes]) -> int:
    """POST a real packet as its own sender; the status code."""
    packet = with_unique_document_id(sample_bytes["edoc_new.edxml"])
    sender = sender_of(packet)
    if sender not in gateway.keys:
        await gateway.register(sender)
    async with gateway.client(sender) as client:
        return (await client.post("/v1/messages", content=packet, headers=XML)).status_code


async def metric(gateway: RunningGateway, name: str, **labels: str) -> float:
    """One sample of the gateway's /metrics (0 when absent)."""
    wanted = name + ("{" + ",".join(f'{k}="{v}"' for k, v in sorted(labels.items())) + "}" if labels else "")
    async with gateway.client() as client:
        text = (await client.get("/metrics")).text
    for line in text.splitlines():
        sample, _, value = line.rpartition(" ")
        if sample == wanted:
            return float(value)
    return 0.0


async def body_bytes_held(gateway: RunningGateway) -> float:
    return await metric(gateway, "docbus_gateway_body_bytes")


async def until(condition: object, seconds: float = 5.0) -> None:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if await condition():  # type: ignore[operator]
            return
        await asyncio.sleep(0.05)
    raise AssertionError("the condition did not come true in time")


@contextmanager
def uvicorn_errors() -> Iterator[list[logging.LogRecord]]:
    """The records uvicorn logs at ERROR or above meanwhile ("Exception in ASGI application" is one)."""
    records: list[logging.LogRecord] = []

    class Keep(logging.Handler):
        def emit(self, record: logging.LogRecord) -> None:
            records.append(record)

    handler = Keep(logging.ERROR)
    logger = logging.getLogger("uvicorn")  # uvicorn's loggers do not propagate to the root
    logger.addHandler(handler)
    try:
        yield records
    finally:
        logger.removeHandler(handler)


def problem_of(headers: dict[str, str], body: bytes) -> dict[str, object]:
    assert headers["content-type"] == "application/problem+json"
    problem = orjson.loads(body)
    assert isinstance(problem, dict)
    return problem


async def test_a_body_that_stops_arriving_gets_408_and_the_connection_closes(gateway: RunningGateway) -> None:
    await gateway.register(SENDER)
    async with raw_post(gateway, 10_000) as conn:
        await conn.send(b"<edXML" + b" " * 500)
        started = time.monotonic()
        status, headers, body = await conn.answer()
        waited = time.monotonic() - started
        assert status == 408
        assert headers["connection"] == "close"
        problem = problem_of(headers, body)
        assert str(problem["type"]).endswith("/request-timeout")
        assert "0.5 s" in str(problem["detail"]) and "506 bytes" in str(problem["detail"])
        assert 0.4 <= waited < 5
        assert await conn.closed_by_server()
    assert (await row_counts(gateway.db))["messages"] == 0


async def test_a_body_that_trickles_past_the_deadline_gets_408(gateway: RunningGateway) -> None:
    """A byte every 0.2 s never trips the 0.5 s idle timeout; the 2 s deadline stops it."""
    await gateway.register(SENDER)
    async with raw_post(gateway, 10_000) as conn:
        started = time.monotonic()

        async def trickle() -> None:
            while True:
                await conn.send(b" ")
                await asyncio.sleep(0.2)

        trickler = asyncio.create_task(trickle())
        try:
            status, headers, body = await conn.answer()
        finally:
            trickler.cancel()
            await asyncio.gather(trickler, return_exceptions=True)
        assert status == 408
        assert "still arriving 2 s after it started" in str(problem_of(headers, body)["detail"])
        assert 1.8 <= time.monotonic() - started < 6
    assert (await row_counts(gateway.db))["messages"] == 0


async def test_a_client_that_disconnects_half_way_is_counted_without_a_traceback(
    gateway: RunningGateway, sample_bytes: dict[str, bytes]
) -> None:
    await gateway.register(SENDER)
    labels = {"status": "499", "type": "client-closed-request"}
    before = await metric(gateway, "docbus_intake_rejected_total", **labels)
    held_before = await body_bytes_held(gateway)
    with uvicorn_errors() as errors:
        for _ in range(3):
            async with raw_post(gateway, 50_000) as conn:
                await conn.send(b"<edXML" + b" " * 20_000)
        await until(lambda: _counted(gateway, labels, before + 3))
    assert errors == []
    assert await body_bytes_held(gateway) == held_before
    assert (await row_counts(gateway.db))["messages"] == 0
    assert await post_a_sample(gateway, sample_bytes) == 202  # and the gateway goes on


async def _counted(gateway: RunningGateway, labels: dict[str, str], expected: float) -> bool:
    return await metric(gateway, "docbus_intake_rejected_total", **labels) >= expected


# The client holding part of the budget must not be timed out while the test works: on a loaded machine that took
# longer than the short idle timeout the other tests use, and the budget came back early.
@pytest.mark.parametrize("gateway_settings", [(30.0, 60.0)], indirect=True)
async def test_bodies_in_flight_stay_under_the_budget(gateway: RunningGateway, sample_bytes: dict[str, bytes]) -> None:
    """3 MiB for bodies in flight: one client holds 1.5 MiB of an unfinished body. A body declared at 2 MiB is
    refused before it is read, a chunked one as soon as it would pass the budget; a small one still gets in. Once
    the first client goes, the budget is whole again."""
    await gateway.register(SENDER)
    held_before = await body_bytes_held(gateway)
    async with raw_post(gateway, 2 * MIB) as hog:
        await hog.send(b"<edXML" + b" " * (3 * MIB // 2 - 6))
        await until(lambda: _holds(gateway, held_before + 3 * MIB // 2))

        async with gateway.client(SENDER) as client:
            declared = await client.post("/v1/messages", content=b"<a>" + b" " * (2 * MIB - 8) + b"</a>", headers=XML)
            assert declared.status_code == 503
            assert declared.headers["retry-after"] == "1"
            problem = declared.json()
            assert problem["type"].endswith("/busy") and problem["retry_after_seconds"] == 1.0
            assert str(3 * MIB) in problem["detail"]

            async def chunked() -> AsyncIterator[bytes]:
                yield b"<a>"
                for _ in range(30):  # 1.9 MiB in all: under the size cap, over what is left of the budget
                    yield b" " * 65536

            streamed = await client.post("/v1/messages", content=chunked(), headers=XML)
            assert streamed.status_code == 503
            assert streamed.json()["type"].endswith("/busy")

        assert await post_a_sample(gateway, sample_bytes) == 202  # a small one still fits
        assert await body_bytes_held(gateway) == held_before + 3 * MIB // 2  # the refused ones gave theirs back
    await until(lambda: _holds(gateway, held_before))
    async with gateway.client(SENDER) as client:
        junk = await client.post("/v1/messages", content=b"<a>" + b" " * (2 * MIB - 8), headers=XML)
    assert junk.status_code == 400  # read whole and judged: the budget no longer stands in the way
    assert (await row_counts(gateway.db))["messages"] == 1


async def _holds(gateway: RunningGateway, expected: float) -> bool:
    return await body_bytes_held(gateway) == expected


def test_the_budget_must_hold_the_largest_body() -> None:
    with pytest.raises(ValueError, match="inflight_body_bytes must be at least max_body_bytes"):
        Settings(max_body_bytes=4 * MIB, inflight_body_bytes=2 * MIB)
