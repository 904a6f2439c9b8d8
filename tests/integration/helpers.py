"""Small helpers for integration tests: reading sample facts independently of the bus, counting stored rows."""

from __future__ import annotations

import contextlib
import os
import subprocess
import sys
import uuid
from collections.abc import AsyncIterator
from pathlib import Path

import orjson
from aiohttp import web
from lxml import etree
from sqlalchemy import func, select

from docbus.store.database import Database
from docbus.store.tables import events, messages, outbox, payloads

NS = {"e": "http://www.mic.gov.vn/TBT/QCVN_102_2016"}


@contextlib.asynccontextmanager
async def serving_app(app: web.Application) -> AsyncIterator[str]:
    """``app`` served over real HTTP on a free loopback port; yields its base URL."""
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        await runner.cleanup()


def header_text(packet: bytes, path: str) -> str:
    """Text of the first element at ``path`` under MessageHeader (read with plain lxml, not with the bus)."""
    root = etree.fromstring(packet)
    found = root.xpath(f"//e:MessageHeader/{path}", namespaces=NS)
    assert found, f"{path} not in packet"
    return str(found[0].text).strip()


def sender_of(packet: bytes) -> str:
    return header_text(packet, "e:From/e:OrganId")


def with_unique_document_id(packet: bytes) -> bytes:
    """A copy of a sample document with a fresh DocumentId, so it is a new submission."""
    root = etree.fromstring(packet)
    (doc_id,) = root.xpath("//e:MessageHeader/e:DocumentId", namespaces=NS)
    doc_id.text = f"{sender_of(packet)},2026/11/27,{uuid.uuid4().int % 10**12}/TEST"
    return bytes(etree.tostring(root, xml_declaration=True, encoding="UTF-8"))


async def row_counts(db: Database) -> dict[str, int]:
    """Rows per table; ``events`` counts ACCEPTED events only (the relay adds PUBLISHED ones on its own time)."""
    counts = {}
    async with db.reader.connect() as conn:
        for table in (messages, payloads, outbox):
            counts[table.name] = int(await conn.scalar(select(func.count()).select_from(table)) or 0)
        accepted = select(func.count()).select_from(events).where(events.c.type == "ACCEPTED")
        counts["events"] = int(await conn.scalar(accepted) or 0)
    return counts


def config_check_finding(part: str, env: dict[str, str], data_dir: Path) -> dict[str, str]:
    """``docbus config check --json``'s finding about ``part``, run with ``env`` as its whole ``DOCBUS_``
    environment (and ``data_dir`` as the data directory); no password given in ``env`` may show in its output."""
    clean = {k: v for k, v in os.environ.items() if not k.startswith("DOCBUS_")}
    clean |= {"DOCBUS_DATA_DIR": str(data_dir), **env}
    command = [sys.executable, "-m", "docbus.cli", "config", "check", "--json", "--timeout", "10"]
    done = subprocess.run(command, env=clean, capture_output=True, text=True, timeout=120)
    for name, value in env.items():
        if "PASSWORD" in name and value:
            assert value not in done.stdout + done.stderr, f"{name} shows in the check's output"
    (finding,) = [f for f in map(orjson.loads, done.stdout.splitlines()) if f["part"] == part]
    return dict(finding)
