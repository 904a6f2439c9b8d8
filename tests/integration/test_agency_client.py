"""The agency client against a real gateway on SQLite and PostgreSQL: it rides out a rate limit, a gateway that
is not up yet and an answer lost on the way back, and stores each message exactly once."""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from sqlalchemy import func, select

from docbus.connectors.client import AgencyClient, SubmissionRefused
from docbus.settings import Settings
from docbus.store.tables import messages

from ..conftest import RunningGateway, free_port, start_gateway
from .helpers import with_unique_document_id

SENDER = "000.00.00.G22"
XML = "application/xml"


@pytest.fixture
def gateway_settings(tmp_path: Path, database_url: str) -> Settings:
    return Settings(
        data_dir=tmp_path / "data",
        database_url=database_url,
        intake_rate_per_agency=1.0,
        intake_burst_per_agency=1,
    )


async def stored(gateway: RunningGateway) -> int:
    async with gateway.db.reader.connect() as conn:
        return int(await conn.scalar(select(func.count()).select_from(messages)))


@pytest.fixture
def packet(sample_bytes: dict[str, bytes]) -> bytes:
    return sample_bytes["edoc_with_attachment_dc0bdef0.edxml"]  # sent by 000.00.00.G22


async def test_the_client_waits_out_the_agency_rate(gateway: RunningGateway, packet: bytes) -> None:
    """One message a second, a burst of one: three submissions in a row all get in, each after the wait the
    gateway asked for, and a refusal that waiting cannot mend (422) is not tried again."""
    key = await gateway.register(SENDER)
    started = time.monotonic()
    async with AgencyClient(gateway.base_url, key) as client:
        receipts = [await client.submit(with_unique_document_id(packet), XML) for _ in range(3)]
        assert len({r["message_id"] for r in receipts}) == 3
        assert time.monotonic() - started >= 1.5  # two waits of about a second each
        await asyncio.sleep(1.1)  # a token for the refusal below
        asked = time.monotonic()
        with pytest.raises(SubmissionRefused) as refused:
            await client.submit(packet.replace(b"000.00.00.G22", b"000.00.00.G2", 1), XML, attempts=5)
        assert refused.value.status == 422
        # Answered after one attempt: a second would have found the bucket empty and waited about a second.
        assert time.monotonic() - asked < 0.8
    assert await stored(gateway) == 3


async def test_the_client_keeps_trying_until_the_gateway_is_up(
    gateway_settings: Settings, gateway: RunningGateway, packet: bytes
) -> None:
    """A second gateway on the same database starts a second after the client's first attempt."""
    key = await gateway.register(SENDER)
    port = free_port()
    url = f"http://127.0.0.1:{port}"

    async def late_gateway() -> tuple[object, asyncio.Task[None]]:
        await asyncio.sleep(1.0)
        server, task, _ = await start_gateway(gateway_settings, port=port)
        return server, task

    starting = asyncio.create_task(late_gateway())
    try:
        async with AgencyClient(url, key) as client:
            receipt = await client.submit(with_unique_document_id(packet), XML, attempts=8, max_wait=30)
        assert receipt["sender"] == SENDER
    finally:
        server, task = await starting
        server.should_exit = True  # type: ignore[attr-defined]
        await task
    assert await stored(gateway) == 1


@contextlib.asynccontextmanager
async def proxy_losing_first_answer(target_port: int) -> AsyncIterator[tuple[str, list[int]]]:
    """A loopback TCP proxy that passes the first connection's request on and drops the connection before the
    answer gets back (a gateway that stored the message, a network that lost the 202); later ones pass through.
    Yields its URL and a one-item list counting the connections it took."""
    count = [0]

    async def pipe(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        with contextlib.suppress(ConnectionError):
            while data := await reader.read(65536):
                writer.write(data)
                await writer.drain()
        writer.close()

    async def handle(client_reader: asyncio.StreamReader, client_writer: asyncio.StreamWriter) -> None:
        count[0] += 1
        upstream_reader, upstream_writer = await asyncio.open_connection("127.0.0.1", target_port)
        if count[0] == 1:
            forward = asyncio.create_task(pipe(client_reader, upstream_writer))
            await upstream_reader.read(1)  # the gateway has answered, so the message is stored
            forward.cancel()
            client_writer.transport.abort()
            upstream_writer.close()
            return
        await asyncio.gather(pipe(client_reader, upstream_writer), pipe(upstream_reader, client_writer))

    server = await asyncio.start_server(handle, "127.0.0.1", 0)
    try:
        yield f"http://127.0.0.1:{server.sockets[0].getsockname()[1]}", count
    finally:
        server.close()


async def test_an_answer_lost_on_the_way_back_is_replayed_not_stored_twice(
    gateway: RunningGateway, packet: bytes
) -> None:
    key = await gateway.register(SENDER)
    port = int(gateway.base_url.rsplit(":", 1)[1])
    body = with_unique_document_id(packet)
    async with proxy_losing_first_answer(port) as (url, connections), AgencyClient(url, key) as client:
        receipt = await client.submit(body, XML)
    assert connections == [2]
    async with gateway.client(SENDER) as direct:
        original = await direct.get(f"/v1/messages/{receipt['message_id']}/receipt")
    assert original.json() == receipt  # the second attempt got the first one's receipt back
    assert await stored(gateway) == 1
