"""``docbus backup`` against a real ``docbus serve`` taking a stream of POSTs: the copy holds every message
acknowledged before it began, byte for byte (inline and claim-checked payloads, receipts), runs as a data
directory of its own with the same signing key, and passes the audit; refusals leave nothing behind."""

from __future__ import annotations

import asyncio
import hashlib
import os
import signal
import time
import uuid
from pathlib import Path

import httpx
import orjson
import pytest

from ..conftest import SAMPLES, free_port
from .test_cli import docbus
from .test_crash_safety import spawn_gateway, wait_ready

DOC = (SAMPLES / "edoc_with_attachment_dc0bdef0.edxml").read_bytes()
# Comments after the root element keep the packet valid and make it bigger than the claim-check threshold.
BIG_DOC = DOC + b"\n<!--" + b"p" * 8000 + b"-->\n"
THRESHOLD = 16 * 1024


@pytest.fixture
def env(tmp_path: Path) -> dict[str, str]:
    values = {**os.environ, "DOCBUS_DATA_DIR": str(tmp_path / "data"), "DOCBUS_CLAIM_CHECK_BYTES": str(THRESHOLD)}
    for name in ("DOCBUS_DATABASE_URL", "DOCBUS_KAFKA_BOOTSTRAP", "DOCBUS_ROUTES_FILE"):
        values.pop(name, None)
    return values


async def post_stream(base: str, key: str, stop: asyncio.Event, accepted: list[tuple[float, dict[str, str]]]) -> None:
    """Eight clients POSTing until told to stop; each 202 is kept with the time its answer arrived."""

    async def client(n: int) -> None:
        async with httpx.AsyncClient(base_url=base, headers={"Authorization": f"Bearer {key}"}) as http:
            i = 0
            while not stop.is_set():
                body = BIG_DOC if (n + i) % 2 else DOC
                answer = await http.post(
                    "/v1/messages",
                    content=body,
                    headers={"Content-Type": "application/xml", "Idempotency-Key": uuid.uuid4().hex},
                )
                assert answer.status_code == 202, answer.text
                accepted.append((time.monotonic(), {"id": answer.json()["message_id"], "receipt": answer.text}))
                i += 1

    await asyncio.gather(*(client(n) for n in range(8)))


async def test_a_backup_taken_under_load_holds_everything_acknowledged_before_it(
    env: dict[str, str], tmp_path: Path
) -> None:
    key = docbus(env, "agency", "add", "000.00.00.G22", "--name", "VPCP").stdout.strip().splitlines()[-1]
    for _ in range(2):  # a key that was rotated: the copy must keep publishing the retired one
        assert docbus(env, "signing-key", "rotate").returncode == 0
    port = free_port()
    base = f"http://127.0.0.1:{port}"
    proc = spawn_gateway(env, port, tmp_path / "gateway.log")
    destination = tmp_path / "backup"
    accepted: list[tuple[float, dict[str, str]]] = []
    try:
        await wait_ready(base, proc)
        async with httpx.AsyncClient(base_url=base) as http:
            original_keys = (await http.get("/v1/keys")).json()
        assert len(original_keys["keys"]) == 2
        stop = asyncio.Event()
        stream = asyncio.create_task(post_stream(base, key, stop, accepted))
        while len(accepted) < 150:
            await asyncio.sleep(0.05)
        began = time.monotonic()
        made = await asyncio.to_thread(docbus, env, "backup", str(destination), "--json")
        await asyncio.sleep(0.5)  # intake goes on after the copy
        stop.set()
        await stream
    finally:
        proc.send_signal(signal.SIGTERM)
        proc.wait(timeout=30)
    assert made.returncode == 0, made.stderr
    manifest = orjson.loads(made.stdout)
    assert manifest == orjson.loads((destination / "BACKUP.json").read_bytes())
    before = [entry for at, entry in accepted if at < began]
    assert len(before) >= 150
    assert manifest["messages"] >= len(before)
    assert manifest["claim_checked"] >= 1 and manifest["claim_checked"] < manifest["messages"]
    assert (destination / "keys" / "receipt-signing.pem").stat().st_mode & 0o777 == 0o600

    # The copy runs as a data directory of its own: same key, every earlier message and receipt, intact.
    copy_env = {**env, "DOCBUS_DATA_DIR": str(destination)}
    port = free_port()
    base = f"http://127.0.0.1:{port}"
    proc = spawn_gateway(copy_env, port, tmp_path / "restored.log")
    try:
        await wait_ready(base, proc)
        async with httpx.AsyncClient(base_url=base, headers={"Authorization": f"Bearer {key}"}) as http:
            assert (await http.get("/v1/keys")).json() == original_keys
            for entry in before:
                receipt = await http.get(f"/v1/messages/{entry['id']}/receipt")
                assert receipt.status_code == 200, entry["id"]
                assert receipt.text == entry["receipt"]
                payload = await http.get(f"/v1/messages/{entry['id']}/payload")
                expected = orjson.loads(entry["receipt"])["sha256"]
                assert hashlib.sha256(payload.content).hexdigest() == expected
    finally:
        proc.send_signal(signal.SIGTERM)
        proc.wait(timeout=30)
    verified = docbus(copy_env, "audit", "verify")
    assert verified.returncode == 0 and "0 problems" in verified.stdout, verified.stdout


def test_refusals_leave_nothing_behind(env: dict[str, str], tmp_path: Path) -> None:
    data = Path(env["DOCBUS_DATA_DIR"])
    missing = docbus(env, "backup", str(tmp_path / "b1"))
    assert (missing.returncode, "no docbus database" in missing.stderr) == (1, True)
    assert not (tmp_path / "b1").exists()

    assert docbus(env, "migrate").returncode == 0
    occupied = tmp_path / "occupied"
    occupied.mkdir()
    (occupied / "keep.txt").write_text("mine")
    refused = docbus(env, "backup", str(occupied))
    assert (refused.returncode, "not an empty folder" in refused.stderr) == (1, True)
    assert [p.name for p in occupied.iterdir()] == ["keep.txt"]

    inside = docbus(env, "backup", str(data / "payloads" / "bk"))
    assert (inside.returncode, "inside the payload store" in inside.stderr) == (1, True)
    assert not (data / "payloads" / "bk").exists()

    postgres = {**env, "DOCBUS_DATABASE_URL": "postgresql+asyncpg://u:p@127.0.0.1:9/db"}
    refused = docbus(postgres, "backup", str(tmp_path / "b2"))
    assert (refused.returncode, "pg_dump" in refused.stderr) == (1, True)
    assert not (tmp_path / "b2").exists()

    done = docbus(env, "backup", str(tmp_path / "b3"))
    assert done.returncode == 0, done.stderr
    assert done.stdout.startswith("backed up 0 messages")
