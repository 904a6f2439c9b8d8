"""kill -9 the gateway while clients stream POSTs: every 202 survives intact, nothing is half-stored."""

from __future__ import annotations

import asyncio
import hashlib
import os
import signal
import subprocess
import sys
from pathlib import Path

import httpx
import pytest
from sqlalchemy import select

from docbus.store.agencies import AgencyDirectory
from docbus.store.database import Database
from docbus.store.migrate import upgrade_async
from docbus.store.tables import events, messages, outbox, payloads

from ..conftest import free_port
from .helpers import with_unique_document_id

pytestmark = pytest.mark.slow


def spawn_gateway(env: dict[str, str], port: int, log: Path) -> subprocess.Popen[bytes]:
    with log.open("ab") as out:  # the child keeps its own descriptor
        return subprocess.Popen(
            [sys.executable, "-m", "docbus.cli", "serve", "--port", str(port), "--log-level", "warning"],
            env=env,
            stdout=out,
            stderr=subprocess.STDOUT,
        )


async def wait_ready(base: str, proc: subprocess.Popen[bytes]) -> None:
    async with httpx.AsyncClient(base_url=base) as client:
        for _ in range(300):
            assert proc.poll() is None, "gateway exited during start-up"
            try:
                if (await client.get("/healthz")).status_code == 200:
                    return
            except httpx.TransportError:
                pass
            await asyncio.sleep(0.05)
    raise AssertionError("gateway did not become ready")


async def deployment(tmp_path: Path, database_url: str) -> tuple[Database, str, dict[str, str], int]:
    """A migrated database with one agency; its key, the gateway's environment and a free port for it."""
    await upgrade_async(database_url)
    db = Database(database_url)
    _, key = await AgencyDirectory(db).add("000.00.00.G22", name="Văn phòng Chính phủ")
    env = {**os.environ, "DOCBUS_DATA_DIR": str(tmp_path / "data"), "DOCBUS_DATABASE_URL": database_url}
    env.pop("DOCBUS_KAFKA_BOOTSTRAP", None)
    return db, key, env, free_port()


async def post_until_refused(
    client: httpx.AsyncClient,
    template: bytes,
    acknowledged: dict[str, str],
    other_answers: list[int] | None = None,
) -> None:
    """POST fresh documents until the connection is refused; note each 202 (message id -> sha256 of what was
    sent) and, when asked, every other status."""
    while True:
        packet = with_unique_document_id(template)
        try:
            response = await client.post("/v1/messages", content=packet, headers={"Content-Type": "application/xml"})
        except httpx.TransportError:
            return
        if response.status_code == 202:
            acknowledged[response.json()["message_id"]] = hashlib.sha256(packet).hexdigest()
        elif other_answers is not None:
            other_answers.append(response.status_code)


async def test_kill_9_during_a_stream_of_posts(
    tmp_path: Path, database_url: str, sample_bytes: dict[str, bytes]
) -> None:
    db, key, env, port = await deployment(tmp_path, database_url)
    base = f"http://127.0.0.1:{port}"
    proc = spawn_gateway(env, port, tmp_path / "gateway.log")
    acknowledged: dict[str, str] = {}  # message id -> sha256 of what we sent
    template = sample_bytes["edoc_with_attachment_dc0bdef0.edxml"]
    try:
        await wait_ready(base, proc)

        async with httpx.AsyncClient(base_url=base, headers={"Authorization": f"Bearer {key}"}, timeout=10) as client:
            streams = [asyncio.create_task(post_until_refused(client, template, acknowledged)) for _ in range(16)]
            while len(acknowledged) < 300:
                await asyncio.sleep(0.02)
            os.kill(proc.pid, signal.SIGKILL)
            proc.wait()
            await asyncio.wait_for(asyncio.gather(*streams), timeout=30)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()

    # Restart on the same database: it must come up cleanly and serve what was acknowledged.
    proc = spawn_gateway(env, port, tmp_path / "gateway.log")
    try:
        await wait_ready(base, proc)
        async with httpx.AsyncClient(base_url=base, headers={"Authorization": f"Bearer {key}"}) as client:
            some_id = next(iter(acknowledged))
            detail = await client.get(f"/v1/messages/{some_id}")
            assert detail.status_code == 200
    finally:
        proc.send_signal(signal.SIGTERM)
        proc.wait(timeout=30)

    async with db.reader.connect() as conn:
        stored = {r.id: r.sha256 for r in await conn.execute(select(messages.c.id, messages.c.sha256))}
        bodies = {r.message_id: r.body for r in await conn.execute(select(payloads))}
        accepted = {r.message_id for r in await conn.execute(select(events.c.message_id))}
        queued = {r.message_id for r in await conn.execute(select(outbox.c.message_id))}
    await db.dispose()

    assert len(acknowledged) >= 300
    for message_id, sha in acknowledged.items():
        assert stored.get(message_id) == sha, f"acknowledged {message_id} lost or altered"
    # Whatever is stored (acknowledged or caught between commit and answer) is whole.
    for message_id, sha in stored.items():
        assert hashlib.sha256(bodies[message_id]).hexdigest() == sha
        assert message_id in accepted
        assert message_id in queued
    assert len(stored) - len(acknowledged) <= 256  # at most one in-flight batch went unanswered


async def test_sigterm_during_a_stream_of_posts_answers_every_message_it_stored(
    tmp_path: Path, database_url: str, sample_bytes: dict[str, bytes]
) -> None:
    """A rolling restart stops gateways with SIGTERM under load. The requests in flight are finished and answered,
    new ones are refused at the socket (the client retries elsewhere), the process ends with nothing in its log
    worse than a warning, and every message stored is one a client was told about: none to re-send blind."""
    db, key, env, port = await deployment(tmp_path, database_url)
    base = f"http://127.0.0.1:{port}"
    log = tmp_path / "gateway.log"
    proc = spawn_gateway(env, port, log)
    acknowledged: dict[str, str] = {}
    other_answers: list[int] = []
    template = sample_bytes["edoc_with_attachment_dc0bdef0.edxml"]
    try:
        await wait_ready(base, proc)

        async with httpx.AsyncClient(base_url=base, headers={"Authorization": f"Bearer {key}"}, timeout=10) as client:
            streams = [
                asyncio.create_task(post_until_refused(client, template, acknowledged, other_answers))
                for _ in range(16)
            ]
            while len(acknowledged) < 200:
                await asyncio.sleep(0.02)
            proc.send_signal(signal.SIGTERM)
            # uvicorn re-raises the signal once it has shut down, so the exit status says what stopped it.
            assert await asyncio.to_thread(proc.wait, 30) in (0, -signal.SIGTERM)
            await asyncio.wait_for(asyncio.gather(*streams), timeout=30)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()

    async with db.reader.connect() as conn:
        stored = {r.id: r.sha256 for r in await conn.execute(select(messages.c.id, messages.c.sha256))}
    await db.dispose()
    assert other_answers == []
    assert stored == acknowledged
    text = log.read_text()
    assert "Traceback" not in text and "ERROR" not in text, text[-3000:]
