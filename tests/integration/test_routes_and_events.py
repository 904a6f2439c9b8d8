"""Routing at intake (422 for receivers no route covers), forwarding on the embedded default (file adapter, no
Kafka), the route listing, and the server-sent event stream filtered to what the caller may see."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path

import httpx
import orjson
import pytest
from sqlalchemy import func, select, update

from docbus.settings import Settings
from docbus.store.agencies import AgencyDirectory, Role
from docbus.store.database import Database
from docbus.store.messages import MessageStore
from docbus.store.migrate import upgrade_async
from docbus.store.tables import events

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


@pytest.mark.parametrize("database_url", [pytest.param("postgres", marks=pytest.mark.postgres)], indirect=True)
async def test_on_postgresql_the_event_stream_never_passes_an_event_still_being_written(
    bus: Bus, sample_bytes: dict[str, bytes]
) -> None:
    """PostgreSQL hands out ids before commit: the stream holds back until the rows it read were written long
    enough ago that no earlier id can still appear, and so never moves past an event it has not sent."""
    packet = document(sample_bytes["edoc_with_attachment_dc0bdef0.edxml"], ("000.00.01.H41",))
    operator = "000.00.99.H41"
    async with bus.client("000.00.00.G22") as client:
        message_id = (await client.post("/v1/messages", content=packet, headers=XML)).json()["message_id"]
        for _ in range(600):
            timeline = (await client.get(f"/v1/messages/{message_id}")).json()
            if timeline["status"] == "DELIVERED":
                break
            await asyncio.sleep(0.1)
    assert timeline["status"] == "DELIVERED"
    async with bus.db.reader.connect() as conn:
        position = int(await conn.scalar(select(func.max(events.c.id))) or 0)
    store = MessageStore(bus.db)
    await store.append_event(message_id, "LATE", actor="test")
    async with bus.db.transaction() as conn:  # as if its transaction were still open for three more seconds
        await conn.execute(
            update(events)
            .where(events.c.message_id == message_id, events.c.type == "LATE")
            .values(recorded_at=datetime.now(UTC) + timedelta(seconds=3))
        )
    await store.append_event(message_id, "NEXT", actor="test")
    opened = time.monotonic()
    arrivals: list[tuple[str, float]] = []
    async with bus.client(operator) as client, client.stream("GET", f"/v1/events?since={position}") as stream:
        async for line in stream.aiter_lines():
            if line.startswith("data: "):
                arrivals.append((orjson.loads(line[6:])["type"], time.monotonic() - opened))
                if len(arrivals) == 2:
                    break
    assert [kind for kind, _ in arrivals] == ["LATE", "NEXT"]
    assert arrivals[0][1] >= 4.0  # not before LATE was written three seconds on, plus the two seconds' settling
