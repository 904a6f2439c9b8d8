"""A record on an agency topic that docbus did not write (another producer with rights to the topic, a damaged
record) is logged, counted and skipped: the destination goes on delivering what follows it, on the same key, and
its consumer group's position moves past it. It used to stop the group's commits at that record for good, and
every restart read everything after it again."""

from __future__ import annotations

import asyncio
import inspect
import logging
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path

import httpx
import pytest
from aiohttp import web
from lxml import etree

from docbus.broker.base import OutgoingRecord
from docbus.broker.embedded import EmbeddedBroker
from docbus.broker.embedded_groups import group_positions
from docbus.store.agencies import AgencyDirectory
from docbus.store.database import Database
from docbus.store.migrate import upgrade_async
from docbus.topics import Topics

from ..conftest import SAMPLES, start_gateway
from .helpers import NS, serving_app
from .test_delivery_concurrency import webhook_settings
from .test_forwarding import SENDER, document


@pytest.fixture
async def receiver() -> AsyncIterator[tuple[list[bytes], str]]:
    received: list[bytes] = []

    async def handle(request: web.Request) -> web.Response:
        received.append(await request.read())
        return web.Response(status=200, text="ok")

    app = web.Application()
    app.router.add_post("/hook", handle)
    async with serving_app(app) as base:
        yield received, f"{base}/hook"


def business_id(packet: bytes) -> bytes:
    found = etree.fromstring(packet).xpath("//e:MessageHeader/e:DocumentId/text()", namespaces=NS)
    assert isinstance(found, list) and found
    return str(found[0]).encode()


async def until(check: Callable[[], bool | Awaitable[bool]], seconds: float = 30.0) -> None:
    for _ in range(int(seconds * 10)):
        result = check()
        if inspect.isawaitable(result):
            result = await result
        if result:
            return
        await asyncio.sleep(0.1)
    raise AssertionError("timed out")


async def test_a_record_docbus_did_not_write_is_skipped_and_delivery_goes_on(
    tmp_path: Path, receiver: tuple[list[bytes], str], caplog: pytest.LogCaptureFixture
) -> None:
    received, url = receiver
    caplog.set_level(logging.INFO, logger="docbus")
    settings = webhook_settings(tmp_path, url)
    url_db = settings.resolved_database_url()
    await upgrade_async(url_db)
    db = Database(url_db)
    _, key = await AgencyDirectory(db).add(SENDER, name="Văn phòng Chính phủ")
    topic = Topics(settings.topic_prefix).agency(SENDER)
    template = (SAMPLES / "edoc_with_attachment_dc0bdef0.edxml").read_bytes()
    packets = [document(template, ("000.00.00.H41",)) for _ in range(4)]
    server, task, base = await start_gateway(settings)
    try:
        async with httpx.AsyncClient(base_url=base, headers={"Authorization": f"Bearer {key}"}) as client:

            async def post(packet: bytes) -> None:
                answer = await client.post("/v1/messages", content=packet, headers={"Content-Type": "application/xml"})
                assert answer.status_code == 202, answer.text

            await post(packets[0])
            await until(lambda: len(received) == 1)
            # Three foreign records ahead of the next document, on its key: two without headers (each is
            # reported, neither taken for the other's duplicate), and one whose headers are not even UTF-8.
            foreign = EmbeddedBroker(db)
            await foreign.publish(
                [
                    OutgoingRecord(topic, business_id(packets[1]), b"<not-docbus/>"),
                    OutgoingRecord(topic, business_id(packets[1]), b"<not-docbus-either/>"),
                    OutgoingRecord(
                        topic, business_id(packets[1]), b"\x00\xff", (("message-id", b"\xff\xfe"), ("kind", b"\xc3"))
                    ),
                ]
            )
            for packet in packets[1:]:
                await post(packet)
            await until(lambda: len(received) == 4)

            async def caught_up() -> bool:
                positions = [p for p in await group_positions(db) if p.topic == topic and "hook" in p.group]
                return bool(positions) and all(p.lag == 0 for p in positions)

            await until(caught_up)
        assert sorted(received) == sorted(packets)
        skipped = [r for r in caplog.records if "is not a docbus record" in r.getMessage()]
        assert len(skipped) == 3
        assert all(topic in r.getMessage() for r in skipped)
        async with httpx.AsyncClient(base_url=base) as plain:
            metrics = (await plain.get("/metrics")).text
        assert 'docbus_deliveries_total{destination="hook",outcome="unreadable"} 3.0' in metrics
    finally:
        server.should_exit = True
        await task
        await db.dispose()
