"""Payload files that no message refers to (left by a crash between writing a payload and the commit that records
it, or between payload retention's commit and the file's removal) are found and removed, and nothing else is:
not a referenced payload, not one younger than the grace period, not a file that is not the store's."""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
import time
import uuid
from pathlib import Path

import pytest
from sqlalchemy import update

from docbus.ids import new_message_id
from docbus.payload_orphans import OrphanSweep, find_orphans
from docbus.payload_store import DirectoryPayloadStore
from docbus.settings import Settings
from docbus.store.tables import messages

from ..conftest import RunningGateway, running_gateway
from .helpers import with_unique_document_id

SENDER = "000.00.00.G22"
DOC = "edoc_with_attachment_dc0bdef0.edxml"  # sent by SENDER
XML = {"Content-Type": "application/xml"}
TWO_HOURS_AGO = time.time() - 7200


@pytest.fixture
def gateway_settings(tmp_path: Path, database_url: str) -> Settings:
    return Settings(data_dir=tmp_path / "data", database_url=database_url, claim_check_bytes=1024)


def plant(path: Path, *, old: bool) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(b"left behind")
    if old:
        os.utime(path, (TWO_HOURS_AGO, TWO_HOURS_AGO))
    return path


def docbus(settings: Settings, *args: str) -> subprocess.CompletedProcess[str]:
    env = {
        **os.environ,
        "DOCBUS_DATA_DIR": str(settings.data_dir),
        "DOCBUS_DATABASE_URL": settings.resolved_database_url(),
    }
    command = [sys.executable, "-m", "docbus.cli", *args]
    return subprocess.run(command, env=env, capture_output=True, text=True, timeout=120)


async def test_orphaned_payload_files_are_listed_and_removed_and_nothing_else(
    gateway: RunningGateway, sample_bytes: dict[str, bytes]
) -> None:
    await gateway.register(SENDER)
    async with gateway.client(SENDER) as client:
        answers = [
            await client.post("/v1/messages", content=with_unique_document_id(sample_bytes[DOC]), headers=XML)
            for _ in range(3)
        ]
    assert [a.status_code for a in answers] == [202, 202, 202]
    kept_id, purged_id, young_id = (a.json()["message_id"] for a in answers)
    store = DirectoryPayloadStore(gateway.settings.resolved_payload_dir())
    root = store.root
    (day,) = {path.parent for path in root.glob("*/*/*/*")}
    for path in day.iterdir():
        os.utime(path, (TWO_HOURS_AGO, TWO_HOURS_AGO))
    os.utime(day / young_id, None)  # referenced anyway; young files are never even looked up
    # Payload retention cleared this reference and was killed before it removed the file.
    async with gateway.db.transaction() as conn:
        await conn.execute(update(messages).where(messages.c.id == purged_id).values(payload_ref=None))

    expected = {
        day / purged_id,
        plant(day / new_message_id(), old=True),  # written, then the gateway died before its commit
        plant(day / f".{new_message_id()}.{uuid.uuid4().hex}.tmp", old=True),  # an interrupted write
    }
    untouched = {
        day / kept_id,
        day / young_id,
        plant(day / new_message_id(), old=False),  # may still be on its way to the commit
        plant(day / "notes.txt", old=True),  # not the store's
        plant(root / "misc" / "a" / "b" / new_message_id(), old=True),  # not a day's folder
    }

    found = await find_orphans(gateway.db, store, grace_seconds=3600)
    assert {orphan.path for orphan in found} == expected
    assert all(orphan.size == orphan.path.stat().st_size for orphan in found)

    listed = await asyncio.to_thread(docbus, gateway.settings, "payloads", "orphans")
    assert listed.returncode == 3, listed.stderr
    assert {Path(line.split("\t")[0]) for line in listed.stdout.splitlines() if "\t" in line} == expected
    assert all(path.exists() for path in expected | untouched)

    removed = await asyncio.to_thread(docbus, gateway.settings, "payloads", "orphans", "--delete")
    assert removed.returncode == 0, removed.stderr
    assert "3 payload files no message refers to removed" in removed.stdout
    assert not any(path.exists() for path in expected)
    assert all(path.exists() for path in untouched)

    again = await asyncio.to_thread(docbus, gateway.settings, "payloads", "orphans")
    assert again.returncode == 0 and again.stdout.startswith("0 payload files")
    async with gateway.client(SENDER) as client:
        assert (await client.get(f"/v1/messages/{kept_id}/payload")).status_code == 200


def test_a_negative_grace_is_refused(tmp_path: Path) -> None:
    result = docbus(Settings(data_dir=tmp_path), "payloads", "orphans", "--grace-minutes", "-1")
    assert result.returncode == 2
    assert "must not be negative" in result.stderr


async def test_a_running_bus_removes_orphans_by_itself_after_their_grace(
    tmp_path: Path, database_url: str, sample_bytes: dict[str, bytes]
) -> None:
    """``docbus serve`` (and every worker) sweeps on its own: an old orphan goes within a pass or two, while a
    referenced payload, a young file and anything not the store's stay."""
    settings = Settings(
        data_dir=tmp_path / "data",
        database_url=database_url,
        claim_check_bytes=1024,
        payload_orphan_grace_hours=1,
        payload_orphan_check_seconds=0.2,
    )
    settings.data_dir.mkdir()
    async with running_gateway(settings) as gateway:
        await gateway.register(SENDER)
        async with gateway.client(SENDER) as client:
            answer = await client.post("/v1/messages", content=with_unique_document_id(sample_bytes[DOC]), headers=XML)
        assert answer.status_code == 202
        root = settings.resolved_payload_dir()
        (referenced,) = root.glob("*/*/*/*")
        os.utime(referenced, (TWO_HOURS_AGO, TWO_HOURS_AGO))
        day = referenced.parent
        orphan = plant(day / new_message_id(), old=True)
        interrupted = plant(day / f".{new_message_id()}.{uuid.uuid4().hex}.tmp", old=True)
        young = plant(day / new_message_id(), old=False)
        foreign = plant(day / "notes.txt", old=True)
        for _ in range(100):
            if not orphan.exists() and not interrupted.exists():
                break
            await asyncio.sleep(0.1)
        assert not orphan.exists() and not interrupted.exists(), "the bus never removed the orphans"
        assert referenced.exists() and young.exists() and foreign.exists()
        async with gateway.client(SENDER) as client:
            payload = await client.get(f"/v1/messages/{answer.json()['message_id']}/payload")
        assert payload.status_code == 200


async def test_a_sweep_looks_at_every_day_first_then_only_at_the_days_that_can_hold_new_orphans(
    gateway: RunningGateway,
) -> None:
    store = DirectoryPayloadStore(gateway.settings.resolved_payload_dir())
    today = time.strftime("%Y/%m/%d", time.gmtime())
    old_day = store.root / "2020" / "01" / "01"
    sweep = OrphanSweep(gateway.db, store, grace_seconds=3600, interval_seconds=3600)

    first = [plant(old_day / new_message_id(), old=True), plant(store.root / today / new_message_id(), old=True)]
    assert await sweep.sweep() == "removed 2 payload files no message refers to (22 bytes)"
    assert not any(path.exists() for path in first)

    late_in_old_day = plant(old_day / new_message_id(), old=True)  # e.g. copied back from a backup
    recent = plant(store.root / today / new_message_id(), old=True)
    assert await sweep.sweep() == "removed 1 payload file no message refers to (11 bytes)"
    assert late_in_old_day.exists() and not recent.exists()
    assert await sweep.sweep() is None
    # A process that starts afresh looks at every day again; `docbus payloads orphans` always does.
    fresh = OrphanSweep(gateway.db, store, grace_seconds=3600, interval_seconds=3600)
    assert await fresh.sweep() == "removed 1 payload file no message refers to (11 bytes)"
    assert not late_in_old_day.exists()


def test_the_sweep_needs_a_positive_grace(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="positive"):
        OrphanSweep(None, DirectoryPayloadStore(tmp_path), grace_seconds=0, interval_seconds=1)  # type: ignore[arg-type]
