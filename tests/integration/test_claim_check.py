"""Large payloads: a 50 MB edXML packet with attachments is accepted, stored in the payload store, and only a
reference travels through the broker; the gateway does not hold many copies of it in memory."""

from __future__ import annotations

import base64
import hashlib
import os
import signal
from pathlib import Path

import httpx
import orjson
import pytest
from lxml import etree

from docbus.store.agencies import AgencyDirectory
from docbus.store.database import Database
from docbus.store.migrate import upgrade_async

from ..conftest import free_port
from .helpers import NS, with_unique_document_id
from .kafka_support import read_topic
from .test_crash_safety import spawn_gateway, wait_ready

pytestmark = pytest.mark.slow
SENDER = "000.00.00.G22"


def big_packet(template: bytes, total_bytes: int, attachments: int) -> bytes:
    """The sample document with ``attachments`` attachments of random bytes making ~``total_bytes``."""
    root = etree.fromstring(with_unique_document_id(template))
    encoded = root.find("{*}AttachmentEncoded")
    assert encoded is not None
    (first,) = [a for a in encoded if etree.QName(a).localname == "Attachment"]
    manifest = root.find(".//e:edXMLManifest", namespaces=NS)
    assert manifest is not None
    (reference,) = manifest.findall("e:Reference", namespaces=NS)
    per = int(total_bytes / attachments * 3 / 4)
    for i in range(attachments):
        attachment = first if i == 0 else etree.SubElement(encoded, first.tag)
        if i:
            for child in first:
                etree.SubElement(attachment, child.tag).text = child.text
            ref = etree.SubElement(manifest, reference.tag)
            for child in reference:
                etree.SubElement(ref, child.tag).text = child.text
            ref[0].text = f"cid:{300 + i}"
        attachment[0].text = f"cid:{300 + i}" if i else attachment[0].text
        attachment[-1].text = base64.b64encode(os.urandom(per)).decode()
    return bytes(etree.tostring(root, xml_declaration=True, encoding="UTF-8"))


def peak_rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    raise AssertionError("no VmHWM")


async def test_50_mb_packet_is_claim_checked(tmp_path: Path, sample_bytes: dict[str, bytes]) -> None:
    bootstrap = os.environ.get("DOCBUS_TEST_KAFKA_BOOTSTRAP")
    data = tmp_path / "data"
    data.mkdir()
    url = f"sqlite+aiosqlite:///{data / 'docbus.sqlite3'}"
    await upgrade_async(url)
    db = Database(url)
    _, key = await AgencyDirectory(db).add(SENDER, name="Văn phòng Chính phủ")
    await db.dispose()
    env = {**os.environ, "DOCBUS_DATA_DIR": str(data)}
    env.pop("DOCBUS_DATABASE_URL", None)
    if bootstrap:
        env["DOCBUS_KAFKA_BOOTSTRAP"] = bootstrap
    packet = big_packet(sample_bytes["edoc_with_attachment_dc0bdef0.edxml"], 50 * 1024 * 1024, attachments=6)
    assert len(packet) > 50 * 1024 * 1024
    port = free_port()
    base = f"http://127.0.0.1:{port}"
    proc = spawn_gateway(env, port, tmp_path / "gateway.log")
    try:
        await wait_ready(base, proc)
        before = peak_rss_mb(proc.pid)
        async with httpx.AsyncClient(base_url=base, headers={"Authorization": f"Bearer {key}"}, timeout=120) as c:
            response = await c.post("/v1/messages", content=packet, headers={"Content-Type": "application/xml"})
            assert response.status_code == 202, response.text[:500]
            receipt = response.json()
            after = peak_rss_mb(proc.pid)
            payload = await c.get(f"/v1/messages/{receipt['message_id']}/payload")
        assert hashlib.sha256(payload.content).hexdigest() == receipt["sha256"]
    finally:
        proc.send_signal(signal.SIGTERM)
        proc.wait(timeout=30)
    stored = list((data / "payloads").rglob(receipt["message_id"]))
    assert len(stored) == 1
    assert stored[0].stat().st_size == len(packet)
    growth = after - before
    print(f"peak RSS grew by {growth:.0f} MB for a {len(packet) / 2**20:.0f} MB packet")
    # Body, parsed tree and a little more; several full copies of the packet would be 200 MB and up.
    assert growth < 4 * len(packet) / 2**20
    if bootstrap:
        records = [
            r
            for r in await read_topic(bootstrap, f"docbus.agency.{SENDER}")
            if r["headers"]["message-id"] == receipt["message_id"]
        ]
        assert len(records) == 1
        assert len(records[0]["value"]) < 1024
        pointer = orjson.loads(records[0]["value"])
        assert pointer["sha256"] == receipt["sha256"]
        assert records[0]["headers"]["payload-ref"] == pointer["payload_ref"]
