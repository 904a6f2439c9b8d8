"""Routing at intake (422 for receivers no route covers), forwarding on the embedded default (file adapter, no
Kafka), the route listing, and the server-sent event stream filtered to what the caller may see."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import orjson
import pytest

from docbus.settings import Settings
from docbus.store.agencies import AgencyDirectory, Role
from docbus.store.database import Database
from docbus.store.migrate import upgrade_async

from ..conftest import start_gateway
from .helpers import row_counts
from .test_forwarding import document

XML = {"Content-Type": "application/xml"}
ROUTES = """
[[destination]]
name = "archive"
adapter = "file"

[[rule]]
level1 = ["H41"]
destination = "archive"
"""


@dataclass
class Bus:
    base: str
    keys: dict[str, str]
    db: Database
    archive: Path

    def client(self, organ: str) -> httpx.AsyncClient:
        return httpx.AsyncClient(
            base_url=self.base, headers={"Authorization": f"Bearer {self.keys[organ]}"}, timeout=30
        )


@pytest.fixture
async def bus(tmp_path: Path, database_url: str) -> AsyncIterator[Bus]:
    routes = tmp_path / "routes.toml"
    routes.write_text(ROUTES)
    archive = tmp_path / "archive"
    archive.mkdir()
    settings = Settings(
        data_dir=tmp_path / "data",
        database_url=database_url,
        routes_file=routes,
        adapters={"archive": {"directory": str(archive)}},
    )
    await upgrade_async(database_url)
    db = Database(database_url)
    directory = AgencyDirectory(db)
    keys = {
        "000.00.00.G22": (await directory.add("000.00.00.G22", name="Văn phòng Chính phủ"))[1],
        "000.00.00.H37": (await directory.add("000.00.00.H37", name="UBND Tỉnh Lạng Sơn"))[1],
        "000.00.99.H41": (await directory.add("000.00.99.H41", name="Giám sát", role=Role.OPERATOR))[1],
    }
    server, task, base = await start_gateway(settings)
    try:
        yield Bus(base, keys, db, archive)
    finally:
        server.should_exit = True
        await task
        await db.dispose()


async def test_a_receiver_no_route_covers_is_refused_at_intake(bus: Bus, sample_bytes: dict[str, bytes]) -> None:
    packet = document(sample_bytes["edoc_with_attachment_dc0bdef0.edxml"], ("000.00.01.H41", "000.00.00.H14"))
    async with bus.client("000.00.00.G22") as client:
        response = await client.post("/v1/messages", content=packet, headers=XML)
        routes = (await client.get("/v1/routes")).json()
    assert response.status_code == 422
    errors = response.json()["errors"]
    assert [(e["rule"], "000.00.00.H14" in e["message_en"]) for e in errors] == [("no-route", True)]
    assert errors[0]["message_vi"]
    assert (await row_counts(bus.db))["messages"] == 0
    assert routes["destinations"] == [{"name": "archive", "adapter": "file"}]


async def test_forwarding_on_the_embedded_default_and_the_event_stream(
    bus: Bus, sample_bytes: dict[str, bytes]
) -> None:
    seen: list[dict[str, object]] = []
    stranger_saw: list[bytes] = []

    async def listen(organ: str, sink: list, until: str | None) -> None:  # type: ignore[type-arg]
        async with bus.client(organ) as client, client.stream("GET", "/v1/events") as stream:
            assert stream.status_code == 200
            assert stream.headers["content-type"].startswith("text/event-stream")
            async for line in stream.aiter_lines():
                if line.startswith("data: "):
                    event = orjson.loads(line[6:])
                    sink.append(event)
                    if until and event["type"] == until:
                        return

    listener = asyncio.create_task(listen("000.00.00.G22", seen, "DELIVERED"))
    stranger = asyncio.create_task(listen("000.00.00.H37", stranger_saw, None))
    await asyncio.sleep(0.5)
    packet = document(sample_bytes["edoc_with_attachment_dc0bdef0.edxml"], ("000.00.01.H41",))
    async with bus.client("000.00.00.G22") as client:
        receipt = (await client.post("/v1/messages", content=packet, headers=XML)).json()
    await asyncio.wait_for(listener, timeout=60)
    stranger.cancel()
    assert [e["type"] for e in seen if e["message_id"] == receipt["message_id"]] == [
        "ACCEPTED",
        "PUBLISHED",
        "FORWARDING",
        "DELIVERED",
    ]
    assert stranger_saw == []
    written = bus.archive / "000.00.00.G22" / f"{receipt['message_id']}.edxml"
    assert written.read_bytes() == packet
