"""When storing fails, nothing is acknowledged and nothing is left behind; when it is full, everyone is told.

- A claim-checked payload written for a submission that turns out to be a replay, or a conflict, is removed:
  each retry of a 50 MB packet with the same Idempotency-Key used to leave another 50 MB on disk for good.
- A full disk (a real one: a small tmpfs) gets 503 ``store-unavailable`` with ``Retry-After``, never 500; every
  202 before it is stored; ``/readyz`` and the metrics say the writes fail and why; the log says so once with a
  traceback, not once per batch; a claim-checked packet leaves no partial file; and once there is room again
  intake goes on by itself.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import logging
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import orjson
import pytest

from docbus.settings import Settings

from ..conftest import RunningGateway, running_gateway
from .helpers import with_unique_document_id

SENDER = "000.00.00.G22"
DOC = "edoc_with_attachment_dc0bdef0.edxml"  # sent by SENDER
XML = {"Content-Type": "application/xml"}


@pytest.fixture
def gateway_settings(tmp_path: Path, database_url: str) -> Settings:
    return Settings(
        data_dir=tmp_path / "data", database_url=database_url, max_body_bytes=2 * 1024 * 1024, claim_check_bytes=1024
    )


def payload_files(root: Path) -> list[Path]:
    return sorted(path for path in root.rglob("*") if path.is_file())


async def test_a_replay_or_a_conflict_of_a_claim_checked_packet_leaves_no_payload_behind(
    gateway: RunningGateway, sample_bytes: dict[str, bytes]
) -> None:
    await gateway.register(SENDER)
    packet = with_unique_document_id(sample_bytes[DOC])
    other = with_unique_document_id(sample_bytes[DOC])
    assert len(packet) > gateway.settings.claim_check_bytes
    async with gateway.client(SENDER) as client:
        first = await client.post("/v1/messages", content=packet, headers={**XML, "Idempotency-Key": "k-1"})
        replays = [
            await client.post("/v1/messages", content=packet, headers={**XML, "Idempotency-Key": "k-1"})
            for _ in range(3)
        ]
        conflict = await client.post("/v1/messages", content=other, headers={**XML, "Idempotency-Key": "k-1"})
        # Without a key, sender + business id + sha256 identify a submission.
        unkeyed = [await client.post("/v1/messages", content=other, headers=XML) for _ in range(2)]
        message_id = first.json()["message_id"]
        stored = await client.get(f"/v1/messages/{message_id}/payload")

    assert first.status_code == 202
    assert [r.status_code for r in replays] == [202, 202, 202]
    assert all(r.content == first.content for r in replays)
    assert conflict.status_code == 409
    assert [r.status_code for r in unkeyed] == [202, 202]
    assert unkeyed[1].content == unkeyed[0].content
    other_id = unkeyed[0].json()["message_id"]
    files = {path.name: path.read_bytes() for path in payload_files(gateway.settings.resolved_payload_dir())}
    assert files == {message_id: packet, other_id: other}
    assert stored.status_code == 200 and stored.content == packet


# ------------------------------------------------------------------------------------------------ a full disk


@contextlib.contextmanager
def small_disk(where: Path, size: str) -> Iterator[Path]:
    """A tmpfs of ``size`` at ``where``: a disk that really fills up. Needs the right to mount (root here)."""
    where.mkdir(parents=True)
    mounted = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(where)], capture_output=True, text=True
    )
    if mounted.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs to fill up: {mounted.stderr.strip()}")
    try:
        yield where
    finally:
        subprocess.run(["umount", "-l", str(where)], check=False)


def grow(disk: Path, size: str) -> None:
    subprocess.run(["mount", "-o", f"remount,size={size}", str(disk)], check=True)


def settings_on(data_dir: Path) -> Settings:
    """The embedded default (SQLite, payload directory) under ``data_dir``, which must exist."""
    return Settings(data_dir=data_dir, max_body_bytes=4 * 1024 * 1024, claim_check_bytes=512 * 1024)


async def free_space_verdict(data_dir: Path) -> tuple[str, str]:
    """``docbus config check``'s verdict on the room left under ``data_dir`` (size cap 1 MiB: fails below 2 MiB)."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("DOCBUS_")}
    env |= {"DOCBUS_DATA_DIR": str(data_dir), "DOCBUS_MAX_BODY_BYTES": str(1024 * 1024)}
    command = [sys.executable, "-m", "docbus.cli", "config", "check", "--json"]
    done = await asyncio.to_thread(subprocess.run, command, env=env, capture_output=True, text=True, timeout=120)
    (finding,) = [f for f in map(orjson.loads, done.stdout.splitlines()) if f["part"] == "free space"]
    return finding["verdict"], finding["detail"]


def big_packet(template: bytes, size: int) -> bytes:
    """The sample document with its attachment padded past the claim-check threshold (still valid base64)."""
    head, _, tail = template.partition(b"</edXML:ContentTransferEncoded>")
    padding = b"QUJD" * (size // 4)
    return with_unique_document_id(head + padding + b"</edXML:ContentTransferEncoded>" + tail)


@pytest.mark.skipif(os.geteuid() != 0, reason="mounting a tmpfs needs root")
async def test_a_full_disk_is_refused_with_503_and_retry_after_and_intake_resumes_when_there_is_room(
    tmp_path: Path, sample_bytes: dict[str, bytes], caplog: pytest.LogCaptureFixture
) -> None:
    template = sample_bytes[DOC]
    assert b"</edXML:ContentTransferEncoded>" in template
    caplog.set_level(logging.INFO, logger="docbus")
    with small_disk(tmp_path / "disk", "3M") as disk:
        (disk / "data").mkdir()
        assert (await free_space_verdict(disk / "data"))[0] == "warn"  # room, but less than 1 GiB
        async with running_gateway(settings_on(disk / "data")) as gateway:
            await gateway.register(SENDER)
            accepted: dict[str, bytes] = {}
            statuses: list[int] = []
            async with gateway.client(SENDER) as client:
                refusal = None
                for _ in range(2000):
                    packet = with_unique_document_id(template)
                    answer = await client.post("/v1/messages", content=packet, headers=XML)
                    statuses.append(answer.status_code)
                    if answer.status_code == 202:
                        accepted[answer.json()["message_id"]] = packet
                    else:
                        refusal = answer
                        break
                assert refusal is not None, "the disk never filled up"
                more = [
                    await client.post("/v1/messages", content=with_unique_document_id(template), headers=XML)
                    for _ in range(20)
                ]
                big = await client.post("/v1/messages", content=big_packet(template, 1024 * 1024), headers=XML)
                ready = await client.get("/readyz")
                metrics = (await client.get("/metrics")).text

                assert set(statuses[:-1]) == {202} and accepted
                for answer in [refusal, *more, big]:
                    assert answer.status_code == 503, answer.text
                    problem = answer.json()
                    assert problem["type"].endswith("/store-unavailable")
                    assert "full" in problem["detail"]
                    assert answer.headers["Retry-After"] == "30"
                    assert problem["retry_after_seconds"] == 30
                assert ready.status_code == 200
                assert ready.json()["status"] == "degraded"
                database_state = ready.json()["checks"]["database"]
                assert database_state.startswith("degraded: writes failing since"), database_state
                assert "full" in database_state
                assert 'docbus_intake_write_failures_total{reason="full"}' in metrics
                # The large packet's claim-checked payload met the full disk first, in the payload store.
                payload_state = ready.json()["checks"]["payload_store"]
                assert payload_state.startswith("degraded: writes failing since") and "full" in payload_state
                assert 'docbus_payload_write_failures_total{reason="full"}' in metrics
                room = ready.json()["checks"]["free_space"]
                assert room.startswith("degraded: ") and "intake would refuse with 503" in room, room
                assert str(disk) not in ready.text  # readiness is public: it names no path
                verdict, detail = await free_space_verdict(disk / "data")
                assert verdict == "fail" and "intake would refuse with 503" in detail, detail
                payload_dir = gateway.settings.resolved_payload_dir()
                assert not [p for p in payload_files(payload_dir) if p.name.endswith(".tmp")]

                failures = [r for r in caplog.records if r.name.startswith("docbus") and r.levelno >= logging.ERROR]
                # The first failure of each store comes with its traceback, then a line every 10 s at most.
                assert sorted(r.getMessage().split(" write failed")[0] for r in failures if r.exc_info) == [
                    "database",
                    "payload store",
                ]
                assert len(failures) <= 5

                grow(disk, "64M")
                after = [
                    await client.post("/v1/messages", content=with_unique_document_id(template), headers=XML)
                    for _ in range(3)
                ]
                big_after = big_packet(template, 1024 * 1024)
                big_answer = await client.post("/v1/messages", content=big_after, headers=XML)
                recovered = await client.get("/readyz")

                assert [a.status_code for a in after] == [202, 202, 202]
                assert big_answer.status_code == 202, big_answer.text
                assert recovered.json()["status"] == "ready", recovered.text
                assert set(recovered.json()["checks"].values()) == {"ok"}
                messages = [r.getMessage() for r in caplog.records]
                assert any(m.startswith("database writes succeed again") for m in messages)
                assert any(m.startswith("payload store writes succeed again") for m in messages)
                for answer in after:
                    accepted[answer.json()["message_id"]] = b""
                # Every message acknowledged before the disk filled is stored whole.
                for message_id, packet in accepted.items():
                    if not packet:
                        continue
                    stored = await client.get(f"/v1/messages/{message_id}/payload")
                    assert stored.status_code == 200
                    assert hashlib.sha256(stored.content).digest() == hashlib.sha256(packet).digest()
                big_id = big_answer.json()["message_id"]
                assert (await client.get(f"/v1/messages/{big_id}/payload")).content == big_after


# ---------------------------------------------------------------------------------- a broken payload store


async def test_a_payload_store_that_cannot_write_refuses_large_packets_with_503_and_says_so_until_it_can(
    tmp_path: Path, sample_bytes: dict[str, bytes], caplog: pytest.LogCaptureFixture
) -> None:
    """Not a full disk: the payload folder's place is taken by a file. Large packets get 503 (retry in 5 s) and
    nothing is stored; small ones still go through; ``/readyz`` says the payload store fails, without its path;
    once the folder can be made, the next large packet is accepted and readiness is whole again."""
    caplog.set_level(logging.INFO, logger="docbus")
    blocker = tmp_path / "payloads"
    blocker.write_bytes(b"not a folder")
    (tmp_path / "data").mkdir()
    settings = Settings(
        data_dir=tmp_path / "data", payload_dir=blocker, max_body_bytes=4 * 1024 * 1024, claim_check_bytes=64 * 1024
    )
    template = sample_bytes[DOC]
    async with running_gateway(settings) as gateway:
        await gateway.register(SENDER)
        async with gateway.client(SENDER) as client:
            refused = [
                await client.post("/v1/messages", content=big_packet(template, 256 * 1024), headers=XML)
                for _ in range(3)
            ]
            small = await client.post("/v1/messages", content=with_unique_document_id(template), headers=XML)
            ready = await client.get("/readyz")
            metrics = (await client.get("/metrics")).text
            listed = await client.get("/v1/messages")

            for answer in refused:
                assert answer.status_code == 503, answer.text
                assert answer.json()["type"].endswith("/store-unavailable")
                assert "payload store failed" in answer.json()["detail"]
                assert answer.headers["Retry-After"] == "5"
            assert small.status_code == 202
            assert [m["message_id"] for m in listed.json()["items"]] == [small.json()["message_id"]]
            assert ready.status_code == 200 and ready.json()["status"] == "degraded"
            state = ready.json()["checks"]["payload_store"]
            assert state.startswith("degraded: writes failing since") and "(3 writes)" in state, state
            assert str(tmp_path) not in ready.text
            assert 'docbus_payload_write_failures_total{reason="error"}' in metrics
            tracebacks = [r for r in caplog.records if r.exc_info and r.name.startswith("docbus")]
            assert len(tracebacks) == 1 and tracebacks[0].getMessage().startswith("payload store write failed")

            blocker.unlink()
            big = big_packet(template, 256 * 1024)
            accepted = await client.post("/v1/messages", content=big, headers=XML)
            recovered = await client.get("/readyz")

            assert accepted.status_code == 202, accepted.text
            assert (await client.get(f"/v1/messages/{accepted.json()['message_id']}/payload")).content == big
            assert recovered.json()["checks"]["payload_store"] == "ok"
            assert any(r.getMessage().startswith("payload store writes succeed again") for r in caplog.records)
