"""Deliveries in flight per destination: ``DOCBUS_ADAPTERS__<NAME>__CONCURRENCY`` holds, over real HTTP, against a
receiver that answers slowly; a value outside 1-1024 stops the start with the destination's name."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from pathlib import Path

import httpx
import pytest
from aiohttp import web

from docbus.delivery.node import _concurrency
from docbus.settings import Settings
from docbus.store.agencies import AgencyDirectory
from docbus.store.database import Database
from docbus.store.migrate import upgrade_async

from ..conftest import SAMPLES, start_gateway
from .helpers import serving_app
from .test_forwarding import SENDER, document

ROUTES = '[[destination]]\nname = "hook"\nadapter = "webhook"\n\n[[rule]]\nany = true\ndestination = "hook"\n'


class SlowReceiver:
    """A webhook receiver that holds every request 0.2 s and remembers how many it held at once."""

    def __init__(self) -> None:
        self.current = self.peak = self.received = 0

    async def handle(self, request: web.Request) -> web.Response:
        await request.read()
        self.current += 1
        self.peak = max(self.peak, self.current)
        try:
            await asyncio.sleep(0.2)
        finally:
            self.current -= 1
        self.received += 1
        return web.Response(status=200, text="ok")


def webhook_settings(tmp_path: Path, url: str, **adapter: object) -> Settings:
    """SQLite under ``tmp_path``, every receiver routed to the webhook destination "hook" at ``url``."""
    routes = tmp_path / "routes.toml"
    routes.write_text(ROUTES)
    return Settings(
        data_dir=tmp_path / "data",
        database_url=f"sqlite+aiosqlite:///{tmp_path / 'docbus.sqlite3'}",
        routes_file=routes,
        adapters={"hook": {"url": url, "secret": "webhook-shared-secret", **adapter}},
    )


@pytest.fixture
async def receiver() -> AsyncIterator[tuple[SlowReceiver, str]]:
    slow = SlowReceiver()
    app = web.Application()
    app.router.add_post("/hook", slow.handle)
    async with serving_app(app) as base:
        yield slow, f"{base}/hook"


async def test_a_destination_never_holds_more_deliveries_than_its_concurrency(
    tmp_path: Path, receiver: tuple[SlowReceiver, str]
) -> None:
    slow, url = receiver
    settings = webhook_settings(tmp_path, url, concurrency=3)
    url_db = settings.resolved_database_url()
    await upgrade_async(url_db)
    db = Database(url_db)
    _, key = await AgencyDirectory(db).add(SENDER, name="Văn phòng Chính phủ")
    server, task, base = await start_gateway(settings)
    template = (SAMPLES / "edoc_with_attachment_dc0bdef0.edxml").read_bytes()
    try:
        async with httpx.AsyncClient(base_url=base, headers={"Authorization": f"Bearer {key}"}) as client:
            for _ in range(12):  # twelve documents: twelve keys, nothing orders them after each other
                answer = await client.post(
                    "/v1/messages",
                    content=document(template, ("000.00.00.H41",)),
                    headers={"Content-Type": "application/xml"},
                )
                assert answer.status_code == 202, answer.text
        for _ in range(300):
            if slow.received == 12:
                break
            await asyncio.sleep(0.1)
        assert slow.received == 12
        assert slow.peak == 3  # used to the full, never passed
    finally:
        server.should_exit = True
        await task
        await db.dispose()


@pytest.mark.parametrize("value", [0, 1025, "many", None])
def test_a_concurrency_outside_its_range_is_refused(value: object) -> None:
    with pytest.raises(ValueError, match="adapter hook: concurrency"):
        _concurrency("hook", value)
    assert _concurrency("hook", "16") == 16
