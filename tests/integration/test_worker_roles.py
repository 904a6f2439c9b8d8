"""Workers split by role on SQLite and PostgreSQL: one that only publishes (DOCBUS_FORWARDING_ENABLED=false) and
one that only forwards (DOCBUS_RELAY_ENABLED=false), each on its own event loop, together deliver everything once."""

from __future__ import annotations

import asyncio
from pathlib import Path

import httpx
from sqlalchemy import func, select

from docbus.settings import Settings
from docbus.store.agencies import AgencyDirectory
from docbus.store.database import Database
from docbus.store.migrate import upgrade_async
from docbus.store.tables import events, outbox
from docbus.worker import run_worker

from ..conftest import start_gateway
from .test_forwarding import document
from .test_routes_and_events import ROUTES

XML = {"Content-Type": "application/xml"}
SENDER = "000.00.00.G22"


def delivered_files(archive: Path) -> list[Path]:
    """The packets the file adapter wrote (one folder per sender)."""
    return [f for f in archive.rglob("*.edxml") if f.is_file()]


async def count(db: Database, query: object) -> int:
    async with db.reader.connect() as conn:
        return int(await conn.scalar(query) or 0)  # type: ignore[call-overload]


async def test_a_publishing_worker_and_a_forwarding_worker_share_the_work(
    tmp_path: Path, database_url: str, sample_bytes: dict[str, bytes]
) -> None:
    routes = tmp_path / "routes.toml"
    routes.write_text(ROUTES)
    archive = tmp_path / "archive"
    archive.mkdir()
    base = Settings(
        data_dir=tmp_path / "data",
        database_url=database_url,
        routes_file=routes,
        adapters={"archive": {"directory": str(archive)}},
        relay_sweep_interval_seconds=0.05,
    )
    await upgrade_async(database_url)
    db = Database(database_url)
    key = (await AgencyDirectory(db).add(SENDER, name="Văn phòng Chính phủ"))[1]
    # The gateway only takes messages in: it neither publishes nor forwards.
    intake_only = base.model_copy(update={"relay_enabled": False, "forwarding_enabled": False})
    server, serving, url = await start_gateway(intake_only)
    stops = [asyncio.Event(), asyncio.Event()]
    workers: list[asyncio.Task[None]] = []
    try:
        async with httpx.AsyncClient(base_url=url, headers={"Authorization": f"Bearer {key}"}) as client:
            for _ in range(5):
                packet = document(sample_bytes["edoc_with_attachment_dc0bdef0.edxml"], ("000.00.01.H41",))
                assert (await client.post("/v1/messages", content=packet, headers=XML)).status_code == 202

        publisher = base.model_copy(update={"forwarding_enabled": False})
        workers.append(asyncio.create_task(run_worker(publisher, stops[0])))
        unpublished = select(func.count()).select_from(outbox).where(outbox.c.published_at.is_(None))
        for _ in range(200):
            if await count(db, unpublished) == 0:
                break
            await asyncio.sleep(0.05)
        assert await count(db, unpublished) == 0
        await asyncio.sleep(1.0)  # time enough to forward, had it been forwarding
        forwarding = select(func.count()).select_from(events).where(events.c.type == "FORWARDING")
        assert await count(db, forwarding) == 0
        assert delivered_files(archive) == []

        forwarder = base.model_copy(update={"relay_enabled": False})
        workers.append(asyncio.create_task(run_worker(forwarder, stops[1])))
        delivered = select(func.count()).select_from(events).where(events.c.type == "DELIVERED")
        for _ in range(400):
            if await count(db, delivered) == 5:
                break
            await asyncio.sleep(0.05)
        assert await count(db, delivered) == 5
        assert len(delivered_files(archive)) == 5
        published = select(func.count()).select_from(events).where(events.c.type == "PUBLISHED")
        assert await count(db, published) == 5  # once each: the forwarding worker published nothing again
    finally:
        for stop in stops:
            stop.set()
        await asyncio.gather(*workers)
        server.should_exit = True
        await serving
        await db.dispose()
