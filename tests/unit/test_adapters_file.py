"""The file-drop adapter: layout, atomic writes, sidecar, duplicates, unsafe names, missing folder."""

from __future__ import annotations

import asyncio
import dataclasses
import hashlib
from datetime import UTC, datetime
from pathlib import Path

import orjson
import pytest

from docbus.adapters.base import Outbound, PermanentDeliveryError, RetriableDeliveryError
from docbus.adapters.file import FileAdapter, FileSettings
from docbus.envelope import Envelope, MessageKind, SchemaRef

PACKET = "<edXML>văn bản</edXML>".encode()


def outbound(
    payload: bytes = PACKET,
    *,
    message_id: str = "01JDOCBUSFILETEST000000001",
    sender: str = "000.00.00.G22",
    content_type: str = "application/xml",
    kind: MessageKind = MessageKind.EDOC,
) -> Outbound:
    envelope = Envelope(
        message_id=message_id,
        kind=kind,
        schema=SchemaRef("qcvn102.edoc", "2016.1"),
        sender=sender,
        receivers=("000.00.00.H41", "000.00.00.H14"),
        business_id="000.00.00.G22,2015/09/30,7816/VPCP-TTĐT",
        sha256=hashlib.sha256(payload).hexdigest(),
        size=len(payload),
        received_at=datetime(2026, 11, 27, 8, 30, tzinfo=UTC),
        content_type=content_type,
        idempotency_key="client-key-1",
        trace_id="0" * 32,
    )
    return Outbound(envelope, payload, destination="drop", receivers=("000.00.00.H41",), attempt=1)


def names(folder: Path) -> list[str]:
    return sorted(path.name for path in folder.iterdir())


@pytest.fixture
def adapter(tmp_path: Path) -> FileAdapter:
    return FileAdapter(FileSettings(directory=tmp_path))


async def test_writes_payload_and_sidecar_and_nothing_else(adapter: FileAdapter, tmp_path: Path) -> None:
    result = await adapter.deliver(outbound())

    assert result.remote_id == "000.00.00.G22/01JDOCBUSFILETEST000000001.edxml"
    assert result.duplicate is False
    folder = tmp_path / "000.00.00.G22"
    assert sorted(p.name for p in folder.iterdir()) == [
        "01JDOCBUSFILETEST000000001.edxml",
        "01JDOCBUSFILETEST000000001.meta.json",
    ]
    assert (folder / "01JDOCBUSFILETEST000000001.edxml").read_bytes() == PACKET
    meta = orjson.loads((folder / "01JDOCBUSFILETEST000000001.meta.json").read_bytes())
    assert meta["message_id"] == "01JDOCBUSFILETEST000000001"
    assert meta["kind"] == "edoc"
    assert meta["sender"] == "000.00.00.G22"
    assert meta["receivers"] == ["000.00.00.H41", "000.00.00.H14"]
    assert meta["destination_receivers"] == ["000.00.00.H41"]
    assert meta["sha256"] == hashlib.sha256(PACKET).hexdigest()
    assert meta["business_id"] == "000.00.00.G22,2015/09/30,7816/VPCP-TTĐT"
    assert meta["received_at"] == "2026-11-27T08:30:00+00:00"


async def test_json_payloads_get_a_json_extension(adapter: FileAdapter, tmp_path: Path) -> None:
    result = await adapter.deliver(
        outbound(b'{"MaHoSo": "1"}', content_type="application/json; charset=utf-8", kind=MessageKind.DOSSIER)
    )
    assert result.remote_id == "000.00.00.G22/01JDOCBUSFILETEST000000001.json"
    assert (tmp_path / "000.00.00.G22" / "01JDOCBUSFILETEST000000001.json").read_bytes() == b'{"MaHoSo": "1"}'


async def test_redelivery_is_a_no_op_reported_as_duplicate(adapter: FileAdapter, tmp_path: Path) -> None:
    await adapter.deliver(outbound())
    target = tmp_path / "000.00.00.G22" / "01JDOCBUSFILETEST000000001.edxml"
    before = target.stat()

    again = await adapter.deliver(dataclasses.replace(outbound(b"<different/>"), attempt=2))

    assert again.duplicate is True
    assert again.remote_id == "000.00.00.G22/01JDOCBUSFILETEST000000001.edxml"
    assert target.read_bytes() == PACKET
    assert target.stat().st_mtime_ns == before.st_mtime_ns


async def test_concurrent_deliveries_of_one_message_write_it_once(adapter: FileAdapter, tmp_path: Path) -> None:
    results = await asyncio.gather(*(adapter.deliver(outbound()) for _ in range(8)))

    assert sum(not result.duplicate for result in results) == 1
    assert [p.name for p in (tmp_path / "000.00.00.G22").iterdir() if not p.name.endswith(".meta.json")] == [
        "01JDOCBUSFILETEST000000001.edxml"
    ]
    assert not [p for p in (tmp_path / "000.00.00.G22").iterdir() if p.name.endswith(".tmp")]


@pytest.mark.parametrize(
    ("sender", "message_id"),
    [("../outside", "01JDOCBUSFILETEST000000001"), ("..", "x"), ("000.00.00.G22", "../../etc/passwd"), ("a/b", "x")],
)
async def test_unsafe_names_are_refused_for_good(
    adapter: FileAdapter, tmp_path: Path, sender: str, message_id: str
) -> None:
    with pytest.raises(PermanentDeliveryError, match="cannot be used as a file name"):
        await adapter.deliver(outbound(sender=sender, message_id=message_id))
    assert names(tmp_path) == []


async def test_a_missing_directory_is_retriable_and_never_recreated(tmp_path: Path) -> None:
    share = tmp_path / "share"
    adapter = FileAdapter(FileSettings(directory=share))

    with pytest.raises(RetriableDeliveryError, match="not available"):
        await adapter.deliver(outbound())

    assert not share.exists()
    share.mkdir()
    assert (await adapter.deliver(outbound())).duplicate is False
    await adapter.aclose()
    await adapter.aclose()


async def test_the_probe_looks_at_the_folder_and_writes_nothing(tmp_path: Path) -> None:
    drop = tmp_path / "drop"
    adapter = FileAdapter(FileSettings(directory=drop))
    missing = await adapter.probe(1.0)
    assert not missing.reached and not missing.refused and "is not a directory here" in missing.detail
    drop.mkdir()
    found = await adapter.probe(1.0)
    assert found.reached and "may write to" in found.detail
    assert list(drop.iterdir()) == []
