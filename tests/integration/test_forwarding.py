"""Forwarding end to end against real Kafka and the axis simulators over loopback HTTP: routing and fan-out,
receipts on every timeline, an axis down for 30 s, a permanent refusal then a resend, a worker killed with -9."""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path

import httpx
import pytest
from lxml import etree
from sqlalchemy import select

from docbus.settings import Settings
from docbus.simulators import SimulatorConfig, create_app, serve
from docbus.store.agencies import AgencyDirectory, Role
from docbus.store.database import Database
from docbus.store.migrate import upgrade_async
from docbus.store.tables import events

from ..conftest import free_port, require_service, start_gateway
from .helpers import NS
from .test_crash_safety import wait_ready

pytestmark = [pytest.mark.kafka, pytest.mark.slow]
XML = {"Content-Type": "application/xml"}
SENDER = "000.00.00.G22"
IN_PROVINCE = "000.00.01.H41"  # a department of Nghệ An: provincial axis
ELSEWHERE = ("000.00.00.H14", "000.00.00.G17")  # national axis
FAST_RETRY = {"base_delay_seconds": 0.1, "max_delay_seconds": 2.0, "max_attempts": 60}
ROUTES = """
[[destination]]
name = "provincial_axis"

[[destination]]
name = "national_axis"

[[rule]]
level1 = ["H41"]
destination = "provincial_axis"

[[rule]]
any = true
destination = "national_axis"
"""


def document(template: bytes, receivers: tuple[str, ...]) -> bytes:
    """The sample document from G22 with a fresh DocumentId, addressed to ``receivers``."""
    root = etree.fromstring(template)
    header = root.find(".//e:MessageHeader", namespaces=NS)
    assert header is not None
    tos = header.findall("e:To", namespaces=NS)
    for extra in tos[1:]:
        header.remove(extra)
    first = tos[0]
    for i, organ in enumerate(receivers):
        to = first if i == 0 else etree.fromstring(etree.tostring(first))
        to.find("e:OrganId", namespaces=NS).text = organ  # type: ignore[union-attr]
        if i:
            first.addnext(to)
            first = to
    doc_id = header.find("e:DocumentId", namespaces=NS)
    assert doc_id is not None
    doc_id.text = f"{SENDER},2026/11/27,{uuid.uuid4().int % 10**12}/VPCP-TTĐT"
    return bytes(etree.tostring(root, xml_declaration=True, encoding="UTF-8"))


@dataclass
class Bus:
    base: str
    key: str
    operator_key: str
    db: Database
    national: httpx.AsyncClient
    provincial: httpx.AsyncClient

    async def post(self, packet: bytes) -> dict[str, object]:
        async with httpx.AsyncClient(base_url=self.base, headers={"Authorization": f"Bearer {self.key}"}) as c:
            response = await c.post("/v1/messages", content=packet, headers=XML, timeout=60)
        assert response.status_code == 202, response.text
        body: dict[str, object] = response.json()
        return body

    async def events_of(self, types: tuple[str, ...]) -> list[tuple[str, str, str | None]]:
        async with self.db.reader.connect() as conn:
            rows = await conn.execute(
                select(events.c.message_id, events.c.type, events.c.destination).where(events.c.type.in_(types))
            )
            return [(r.message_id, r.type, r.destination) for r in rows]

    async def wait_for(self, type_: str, expected: int, timeout: float) -> None:
        deadline = asyncio.get_running_loop().time() + timeout
        while True:
            found = len(await self.events_of((type_,)))
            if found >= expected:
                return
            assert asyncio.get_running_loop().time() < deadline, f"{found}/{expected} {type_} events"
            await asyncio.sleep(0.25)

    async def received(self, sim: httpx.AsyncClient) -> list[dict[str, object]]:
        items: list[dict[str, object]] = (await sim.get("/_sim/received")).json()["received"]
        return items


async def _prepare(tmp_path: Path, bootstrap: str, nat: str, prov: str) -> tuple[Settings, str, str]:
    prefix = f"t{uuid.uuid4().hex[:10]}"  # this test's own topics and groups on the shared Kafka
    routes = tmp_path / "routes.toml"
    routes.write_text(ROUTES)
    axis = {"system_id": "docbus", "secret": "docbus-secret", "retry": FAST_RETRY, "breaker": {"reset_seconds": 1}}
    settings = Settings(
        data_dir=tmp_path / "data",
        kafka_bootstrap=bootstrap,
        routes_file=routes,
        adapters={"national_axis": {**axis, "url": nat}, "provincial_axis": {**axis, "url": prov}},
        receipt_poll_seconds=0.2,
        relay_lease_seconds=4,
        broker_publish_timeout_seconds=2,
        topic_prefix=prefix,
    )
    settings.data_dir.mkdir(parents=True, exist_ok=True)
    url = settings.resolved_database_url()
    await upgrade_async(url)
    db = Database(url)
    directory = AgencyDirectory(db)
    _, key = await directory.add(SENDER, name="Văn phòng Chính phủ")
    _, operator_key = await directory.add("000.00.99.H41", name="Trung tâm giám sát", role=Role.OPERATOR)
    await db.dispose()
    return settings, key, operator_key


@pytest.fixture
async def simulators() -> AsyncIterator[tuple[str, str]]:
    config = SimulatorConfig(receipt_delays=(0.05, 0.1, 0.15))
    async with serve(create_app("national-axis", config)) as nat, serve(create_app("provincial-axis", config)) as prov:
        yield nat, prov


@pytest.fixture
async def bus(tmp_path: Path, simulators: tuple[str, str]) -> AsyncIterator[Bus]:
    bootstrap = require_service("DOCBUS_TEST_KAFKA_BOOTSTRAP", "Apache Kafka")
    nat, prov = simulators
    settings, key, operator_key = await _prepare(tmp_path, bootstrap, nat, prov)
    server, task, base = await start_gateway(settings)
    db = Database(settings.resolved_database_url())
    async with httpx.AsyncClient(base_url=nat) as n, httpx.AsyncClient(base_url=prov) as p:
        try:
            yield Bus(base, key, operator_key, db, n, p)
        finally:
            server.should_exit = True
            await task
            await db.dispose()


async def test_1000_messages_reach_the_right_axis_once_with_receipts(bus: Bus, sample_bytes: dict[str, bytes]) -> None:
    template = sample_bytes["edoc_with_attachment_dc0bdef0.edxml"]
    shapes = [(IN_PROVINCE,), (ELSEWHERE[0],), (IN_PROVINCE, *ELSEWHERE)]
    packets = [(shape, document(template, shape)) for shape in (shapes[i % 3] for i in range(1000))]
    semaphore = asyncio.Semaphore(32)

    async def post(packet: bytes) -> dict[str, object]:
        async with semaphore:
            return await bus.post(packet)

    receipts = await asyncio.gather(*(post(p) for _, p in packets))
    ids = [str(r["message_id"]) for r in receipts]
    to_province = {i for i, (shape, _) in zip(ids, packets, strict=True) if IN_PROVINCE in shape}
    to_nation = {i for i, (shape, _) in zip(ids, packets, strict=True) if set(shape) & set(ELSEWHERE)}
    deadline = asyncio.get_running_loop().time() + 240
    while True:
        delivered = await bus.events_of(("DELIVERED",))
        by_province = {m for m, _, d in delivered if d == "provincial_axis"}
        by_nation = {m for m, _, d in delivered if d == "national_axis"}
        if by_province >= to_province and by_nation >= to_nation:
            break
        assert asyncio.get_running_loop().time() < deadline, (len(by_province), len(by_nation))
        await asyncio.sleep(0.5)
    assert by_province == to_province
    assert by_nation == to_nation
    assert len(delivered) == len(to_province) + len(to_nation)  # each destination once per message
    for sim, expected in ((bus.provincial, to_province), (bus.national, to_nation)):
        received = await bus.received(sim)
        keys = [r["idempotency_key"] for r in received if r["idempotency_key"] in expected]
        assert sorted(keys) == sorted(expected)  # stored once each

    # Receipts: 06 from every receiver of every message ends on the original's timeline.
    expected_finish = sum(len(shape) for shape, _ in packets)
    await bus.wait_for("RECEIPT", 3 * expected_finish, timeout=240)
    async with httpx.AsyncClient(base_url=bus.base, headers={"Authorization": f"Bearer {bus.key}"}) as c:
        timeline = (await c.get(f"/v1/messages/{ids[2]}")).json()
    codes = sorted((e["detail"]["from"], e["detail"]["code"]) for e in timeline["events"] if e["type"] == "RECEIPT")
    assert codes == sorted((r, code) for r in (IN_PROVINCE, *ELSEWHERE) for code in ("01", "03", "06"))
    assert timeline["status"] == "COMPLETED"
    # Each event carries when it happened and when it was written; a destination's attempt precedes its answer.
    stamped = [
        (e["type"], e["destination"], datetime.fromisoformat(e["at"]), datetime.fromisoformat(e["recorded_at"]))
        for e in timeline["events"]
    ]
    assert all(at <= recorded for _, _, at, recorded in stamped), stamped
    first = {(kind, where): at for kind, where, at, _ in reversed(stamped)}
    assert first[("ACCEPTED", None)] <= first[("PUBLISHED", None)]
    for destination in ("provincial_axis", "national_axis"):
        assert first[("FORWARDING", destination)] <= first[("DELIVERED", destination)]


async def test_axis_down_for_30_seconds_then_everything_is_delivered(bus: Bus, sample_bytes: dict[str, bytes]) -> None:
    template = sample_bytes["edoc_with_attachment_dc0bdef0.edxml"]
    await bus.national.post("/_sim/faults", json={"down": True})
    national = [await bus.post(document(template, (ELSEWHERE[0],))) for _ in range(40)]
    provincial = [await bus.post(document(template, (IN_PROVINCE,))) for _ in range(10)]
    # The provincial axis is not held up by the national one.
    await bus.wait_for("DELIVERED", 10, timeout=30)
    await asyncio.sleep(30)
    assert len(await bus.events_of(("DELIVERED",))) == 10
    assert len(await bus.events_of(("DEAD",))) == 0
    await bus.national.delete("/_sim/faults")
    await bus.wait_for("DELIVERED", 50, timeout=90)
    received = {r["idempotency_key"] for r in await bus.received(bus.national)}
    assert {r["message_id"] for r in national} <= received
    assert {r["message_id"] for r in provincial} <= {r["idempotency_key"] for r in await bus.received(bus.provincial)}


async def test_permanent_refusal_goes_dead_then_resend_delivers(bus: Bus, sample_bytes: dict[str, bytes]) -> None:
    """Three documents refused for good go DEAD; one is resent on its own, the other two by a bulk resend of the
    destination; all three are delivered, each with DEAD, RESENT and DELIVERED on its timeline."""
    await bus.provincial.post("/_sim/faults", json={"permanent_error_code": 22})
    template = sample_bytes["edoc_with_attachment_dc0bdef0.edxml"]
    receipts = [await bus.post(document(template, (IN_PROVINCE,))) for _ in range(3)]
    await bus.wait_for("DEAD", 3, timeout=30)
    headers = {"Authorization": f"Bearer {bus.operator_key}"}
    async with httpx.AsyncClient(base_url=bus.base, headers=headers) as operator:
        letters = (await operator.get("/v1/dead-letters")).json()["items"]
        assert {d["message_id"] for d in letters} == {r["message_id"] for r in receipts}
        assert letters[0]["attempts"][0]["remote_code"] == "22"
        assert letters[0]["attempts"][0]["retriable"] is False
        await bus.provincial.delete("/_sim/faults")
        resent = await operator.post(f"/v1/dead-letters/{letters[0]['id']}/resend")
        assert resent.status_code == 202
        again = await operator.post(f"/v1/dead-letters/{letters[0]['id']}/resend")
        assert again.status_code == 422
        bulk = await operator.post("/v1/dead-letters/resend", params={"destination": "provincial_axis"})
        assert bulk.status_code == 202
        assert bulk.json()["dead_letter_ids"] == sorted(d["id"] for d in letters[1:])
        await bus.wait_for("DELIVERED", 3, timeout=30)
        timelines = [(await operator.get(f"/v1/messages/{r['message_id']}")).json() for r in receipts]
    received = {r["idempotency_key"] for r in await bus.received(bus.provincial)}
    assert {r["message_id"] for r in receipts} <= received
    for timeline in timelines:
        types = [e["type"] for e in timeline["events"]]
        assert types.index("DEAD") < types.index("RESENT") < types.index("DELIVERED")
        assert "FAILED" in types
        assert types.count("DELIVERED") == 1


async def test_worker_killed_mid_stream_loses_nothing_and_duplicates_nothing(
    tmp_path: Path, simulators: tuple[str, str], sample_bytes: dict[str, bytes]
) -> None:
    bootstrap = require_service("DOCBUS_TEST_KAFKA_BOOTSTRAP", "Apache Kafka")
    nat, prov = simulators
    settings, key, _ = await _prepare(tmp_path, bootstrap, nat, prov)
    env = {
        **os.environ,
        "DOCBUS_DATA_DIR": str(settings.data_dir),
        "DOCBUS_KAFKA_BOOTSTRAP": bootstrap,
        "DOCBUS_ROUTES_FILE": str(settings.routes_file),
        "DOCBUS_RECEIPT_POLL_SECONDS": "0.2",
        "DOCBUS_RELAY_LEASE_SECONDS": "4",
        "DOCBUS_BROKER_PUBLISH_TIMEOUT_SECONDS": "2",
        "DOCBUS_TOPIC_PREFIX": settings.topic_prefix,
    }
    env.pop("DOCBUS_DATABASE_URL", None)
    for name, url in (("NATIONAL_AXIS", nat), ("PROVINCIAL_AXIS", prov)):
        env[f"DOCBUS_ADAPTERS__{name}__URL"] = url
        env[f"DOCBUS_ADAPTERS__{name}__SYSTEM_ID"] = "docbus"
        env[f"DOCBUS_ADAPTERS__{name}__SECRET"] = "docbus-secret"
    port = free_port()
    base = f"http://127.0.0.1:{port}"
    log = (tmp_path / "procs.log").open("ab")
    cli = [sys.executable, "-m", "docbus.cli"]
    gateway = subprocess.Popen(
        [*cli, "gateway", "--port", str(port), "--log-level", "warning"], env=env, stdout=log, stderr=log
    )
    worker = subprocess.Popen([*cli, "worker", "--log-level", "warning"], env=env, stdout=log, stderr=log)
    db = Database(settings.resolved_database_url())
    try:
        await wait_ready(base, gateway)
        template = sample_bytes["edoc_with_attachment_dc0bdef0.edxml"]
        ids: list[str] = []
        async with httpx.AsyncClient(base_url=base, headers={"Authorization": f"Bearer {key}"}, timeout=60) as c:

            async def send(n: int) -> None:
                for _ in range(n):
                    r = await c.post("/v1/messages", content=document(template, (ELSEWHERE[0],)), headers=XML)
                    assert r.status_code == 202, r.text
                    ids.append(r.json()["message_id"])

            await asyncio.gather(*(send(25) for _ in range(8)))
            bus = Bus(base, key, "", db, httpx.AsyncClient(base_url=nat), httpx.AsyncClient(base_url=prov))
            await bus.wait_for("DELIVERED", 50, timeout=60)
            worker.send_signal(signal.SIGKILL)
            worker.wait()
            await asyncio.gather(*(send(25) for _ in range(4)))
            worker = subprocess.Popen([*cli, "worker", "--log-level", "warning"], env=env, stdout=log, stderr=log)
            await bus.wait_for("DELIVERED", len(ids), timeout=120)
            received = [r["idempotency_key"] for r in await bus.received(bus.national)]
            await bus.national.aclose()
            await bus.provincial.aclose()
        assert set(ids) <= set(received)
        assert len(received) == len(set(received)), "a message was stored twice at the destination"
    finally:
        for proc in (gateway, worker):
            if proc.poll() is None:
                proc.send_signal(signal.SIGTERM)
                proc.wait(timeout=30)
        log.close()
        await db.dispose()
