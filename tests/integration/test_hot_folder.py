"""The hot-folder connector against a real gateway (SQLite and PostgreSQL), run as the real command.

Files dropped in a folder are submitted, filed with their receipts or reasons; unfinished and temporary files are
left alone; a submission interrupted by a crash is replayed, not stored twice; the long-running mode picks up
what arrives and stops cleanly on SIGTERM.
"""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import httpx
import orjson

from docbus.connectors.client import AgencyClient
from docbus.connectors.hot_folder import idempotency_key
from docbus.signing import verify_receipt

from ..conftest import RunningGateway
from .helpers import row_counts, sender_of, with_unique_document_id

SAMPLE = "edoc_with_attachment_dc0bdef0.edxml"  # sent by 000.00.00.G22


async def hot_folder(folder: Path, key: str, url: str, *args: str) -> subprocess.CompletedProcess[str]:
    """The command, on a thread: the gateway under test answers from this test's event loop."""
    return await asyncio.to_thread(
        subprocess.run,
        [sys.executable, "-m", "docbus.cli", "hot-folder", str(folder), "--key", key, "--url", url, *args],
        capture_output=True,
        text=True,
        timeout=120,
    )


def aged(path: Path, seconds: float = 60) -> Path:
    """As if the system had finished writing it ``seconds`` ago."""
    then = time.time() - seconds
    os.utime(path, (then, then))
    return path


def filed(folder: Path, where: str) -> dict[str, Path]:
    return {p.name: p for p in (folder / where).rglob("*") if p.is_file()}


async def test_a_pass_files_each_document_with_its_receipt_or_its_reason(
    gateway: RunningGateway, sample_bytes: dict[str, bytes], tmp_path: Path
) -> None:
    packet = sample_bytes[SAMPLE]
    key = await gateway.register(sender_of(packet))
    folder = tmp_path / "outbox"
    folder.mkdir()
    bodies = {f"cong-van-{i}.edxml": with_unique_document_id(packet) for i in range(3)}
    for i, (name, body) in enumerate(bodies.items()):
        (folder / name).write_bytes(body)
        aged(folder / name, 60 - i)
    (folder / "hong.xml").write_bytes(b"<edXML><unfinished")
    aged(folder / "hong.xml")
    (folder / "dang-ghi.edxml.part").write_bytes(packet)  # still being written under a temporary name
    aged(folder / "dang-ghi.edxml.part")
    (folder / "moi.edxml").write_bytes(with_unique_document_id(packet))  # just written: not settled yet
    (folder / "ghi-chu.txt").write_text("not a document")
    aged(folder / "ghi-chu.txt")

    done = await hot_folder(folder, key, gateway.base_url, "--once", "--settle", "30")
    assert done.returncode == 1, done.stderr  # one refused
    assert done.stdout.strip() == "3 sent, 1 refused, 0 waiting"

    sent = filed(folder, "sent")
    async with httpx.AsyncClient(base_url=gateway.base_url) as client:
        jwks = (await client.get("/v1/keys")).json()
    for name, body in bodies.items():
        assert sent[name].read_bytes() == body
        receipt = sent[name + ".receipt.json"].read_bytes()
        assert verify_receipt(receipt, jwks, body)["sender"] == "000.00.00.G22"
    refused = filed(folder, "refused")
    assert refused["hong.xml"].read_bytes() == b"<edXML><unfinished"
    problem = orjson.loads(refused["hong.xml.problem.json"].read_bytes())
    assert problem["status"] == 400 and problem["type"].endswith("/not-well-formed")
    left = sorted(p.name for p in folder.iterdir() if p.is_file())
    assert left == ["dang-ghi.edxml.part", "ghi-chu.txt", "moi.edxml"]
    assert [p.name for p in (folder / ".processing").iterdir()] == [".lock"]
    assert (await row_counts(gateway.db))["messages"] == 3


async def test_a_submission_cut_short_by_a_crash_is_replayed_not_stored_twice(
    gateway: RunningGateway, sample_bytes: dict[str, bytes], tmp_path: Path
) -> None:
    """The connector submitted the file and died before filing it away: the file is still in .processing."""
    packet = with_unique_document_id(sample_bytes[SAMPLE])
    key = await gateway.register(sender_of(packet))
    folder = tmp_path / "outbox"
    (folder / ".processing").mkdir(parents=True)
    async with AgencyClient(gateway.base_url, key) as client:
        first = await client.submit(packet, "application/xml", idempotency_key=idempotency_key("cv.edxml", packet))
    (folder / ".processing" / "cv.edxml").write_bytes(packet)

    done = await hot_folder(folder, key, gateway.base_url, "--once")
    assert done.returncode == 0, done.stderr
    receipt = orjson.loads(filed(folder, "sent")["cv.edxml.receipt.json"].read_bytes())
    assert receipt == first
    assert (await row_counts(gateway.db))["messages"] == 1


async def test_while_the_bus_is_away_files_wait_and_nothing_is_lost(
    sample_bytes: dict[str, bytes], tmp_path: Path
) -> None:
    packet = sample_bytes[SAMPLE]
    folder = tmp_path / "outbox"
    folder.mkdir()
    (folder / "a.edxml").write_bytes(packet)
    aged(folder / "a.edxml")
    (folder / "b.edxml").write_bytes(packet)
    aged(folder / "b.edxml", 30)
    closed = "http://127.0.0.1:9"  # nothing listens on the discard port here
    done = await hot_folder(folder, "dbk_unused", closed, "--once")
    assert done.returncode == 1
    assert done.stdout.strip() == "0 sent, 0 refused, 1 waiting"
    waiting = sorted(p.name for p in (folder / ".processing").iterdir())
    assert waiting == [".lock", "a.edxml"]  # the oldest; the next waits in line
    assert (folder / "b.edxml").exists()


async def test_the_long_running_connector_takes_what_arrives_and_stops_on_sigterm(
    gateway: RunningGateway, sample_bytes: dict[str, bytes], tmp_path: Path
) -> None:
    packet = sample_bytes[SAMPLE]
    key = await gateway.register(sender_of(packet))
    key_file = tmp_path / "agency.key"
    key_file.write_text(key + "\n")
    folder = tmp_path / "outbox"
    folder.mkdir()
    proc = subprocess.Popen(
        [
            sys.executable, "-m", "docbus.cli", "hot-folder", str(folder), "--key-file", str(key_file),
            "--url", gateway.base_url, "--interval", "0.1", "--settle", "0.2",
        ],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
    )  # fmt: skip
    try:
        for i in range(3):
            temporary = folder / f"hs-{i}.json.tmp"
            temporary.write_bytes(with_unique_document_id(packet))
            temporary.rename(folder / f"hs-{i}.edxml")  # how well-behaved systems write
        deadline = time.monotonic() + 20
        while len([n for n in filed(folder, "sent") if n.endswith(".receipt.json")]) < 3:
            assert time.monotonic() < deadline, "the connector did not file the documents"
            await asyncio.sleep(0.1)
        second = await hot_folder(folder, key, gateway.base_url, "--once")  # one connector per folder
        assert second.returncode == 2 and "another connector is serving" in second.stderr
    finally:
        proc.send_signal(signal.SIGTERM)
        output = proc.communicate(timeout=30)[0].decode()
    assert proc.returncode == 0, output
    assert "Traceback" not in output
    assert (await row_counts(gateway.db))["messages"] == 3


async def test_a_link_to_a_file_outside_is_never_read_or_sent(
    gateway: RunningGateway, sample_bytes: dict[str, bytes], tmp_path: Path
) -> None:
    """The system writing to the folder may plant a link to something only the connector can read (its settings,
    another agency's key, even a valid packet of another agency): it is filed as refused, unread."""
    packet = with_unique_document_id(sample_bytes[SAMPLE])
    key = await gateway.register(sender_of(packet))
    secret = tmp_path / "private" / "other-agency.edxml"
    secret.parent.mkdir()
    secret.write_bytes(packet)  # valid, and would be accepted if it were read
    folder = tmp_path / "outbox"
    folder.mkdir()
    (folder / "link.edxml").symlink_to(secret)
    os.utime(folder / "link.edxml", (time.time() - 60, time.time() - 60), follow_symlinks=False)

    done = await hot_folder(folder, key, gateway.base_url, "--once")
    assert done.returncode == 1
    assert done.stdout.strip() == "0 sent, 1 refused, 0 waiting"
    refused = filed(folder, "refused")
    assert refused["link.edxml"].is_symlink()
    assert "symbolic link" in orjson.loads(refused["link.edxml.problem.json"].read_bytes())["detail"]
    assert (await row_counts(gateway.db))["messages"] == 0
