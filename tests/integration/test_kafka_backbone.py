"""Accepted messages reach real Apache Kafka, one topic per sending agency, and none is lost on the way:
not when the gateway is killed, not when a broker of three stops, not when Kafka is away for 30 seconds."""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
import uuid
from collections import Counter
from collections.abc import AsyncIterator
from pathlib import Path

import httpx
import orjson
import pytest

from docbus.settings import Settings
from docbus.store.agencies import AgencyDirectory
from docbus.store.database import Database
from docbus.store.migrate import upgrade_async

from ..conftest import free_port, require_service, start_gateway
from .helpers import with_unique_document_id
from .kafka_support import KafkaCluster, read_topic
from .test_crash_safety import spawn_gateway, wait_ready

pytestmark = pytest.mark.kafka
XML = {"Content-Type": "application/xml"}
DOC = "edoc_with_attachment_dc0bdef0.edxml"
SENDER = "000.00.00.G22"
TOPIC = f"docbus.agency.{SENDER}"


@pytest.fixture
def kafka_bootstrap() -> str:
    return require_service("DOCBUS_TEST_KAFKA_BOOTSTRAP", "Apache Kafka")


async def _backlog_drained(base: str, timeout: float) -> None:
    async with httpx.AsyncClient(base_url=base) as client:
        deadline = asyncio.get_running_loop().time() + timeout
        while True:
            ready = (await client.get("/readyz")).json()
            if ready["outbox_backlog"] == 0:
                return
            assert asyncio.get_running_loop().time() < deadline, f"backlog did not drain: {ready}"
            await asyncio.sleep(0.25)


class Load:
    """Clients POSTing unique documents until stopped; remembers every id that got a 202 and every failure."""

    def __init__(self, base: str, key: str, template: bytes, concurrency: int) -> None:
        self.base, self.key, self.template, self.concurrency = base, key, template, concurrency
        self.accepted: list[str] = []
        self.failures: list[str] = []
        self.retried = 0
        self._stop = asyncio.Event()
        self._tasks: list[asyncio.Task[None]] = []

    async def __aenter__(self) -> Load:
        self._client = httpx.AsyncClient(
            base_url=self.base, headers={"Authorization": f"Bearer {self.key}"}, timeout=60
        )
        self._tasks = [asyncio.create_task(self._loop()) for _ in range(self.concurrency)]
        return self

    async def _loop(self) -> None:
        while not self._stop.is_set():
            packet = with_unique_document_id(self.template)
            response = None
            # Like any client of a keep-alive server: a pooled connection the server closed for idleness just as
            # the request went out fails in transport; the same packet again is safe (a replay gets the
            # original receipt), and only a packet that fails every time counts as an intake failure.
            for attempt in range(3):
                try:
                    response = await self._client.post("/v1/messages", content=packet, headers=XML)
                    break
                except httpx.TransportError as exc:
                    if attempt == 2:
                        self.failures.append(f"transport: {exc!r}")
                        return
                    self.retried += 1
            assert response is not None
            if response.status_code == 202:
                if response.headers.get("idempotent-replayed") != "true":  # a retry's first attempt had landed
                    self.accepted.append(response.json()["message_id"])
            else:
                self.failures.append(f"{response.status_code} {response.text[:200]}")

    async def until(self, count: int) -> None:
        while len(self.accepted) < count:
            assert not self.failures, self.failures[:3]
            assert self.retried < 20, "connections keep failing: more than a keep-alive race"
            await asyncio.sleep(0.05)

    async def __aexit__(self, *exc: object) -> None:
        self._stop.set()
        await asyncio.gather(*self._tasks)
        await self._client.aclose()


async def _gateway_on(tmp_path: Path, bootstrap: str, **extra: object) -> AsyncIterator[tuple[str, str]]:
    settings = Settings(
        data_dir=tmp_path / "data", kafka_bootstrap=bootstrap, broker_publish_timeout_seconds=3, **extra
    )
    url = settings.resolved_database_url()
    settings.data_dir.mkdir(parents=True, exist_ok=True)
    await upgrade_async(url)
    db = Database(url)
    _, key = await AgencyDirectory(db).add(SENDER, name="Văn phòng Chính phủ")
    await db.dispose()
    server, task, base = await start_gateway(settings)
    try:
        yield base, key
    finally:
        server.should_exit = True
        await task


async def test_every_accepted_message_is_in_its_agency_topic_exactly_once(
    tmp_path: Path, kafka_bootstrap: str, sample_bytes: dict[str, bytes]
) -> None:
    async for base, key in _gateway_on(tmp_path, kafka_bootstrap):
        async with httpx.AsyncClient(base_url=base, headers={"Authorization": f"Bearer {key}"}) as client:
            packets = [with_unique_document_id(sample_bytes[DOC]) for _ in range(300)]
            responses = await asyncio.gather(*(client.post("/v1/messages", content=p, headers=XML) for p in packets))
            receipts = [r.json() for r in responses]
            assert all(r.status_code == 202 for r in responses)
            await _backlog_drained(base, 60)
            timeline = (await client.get(f"/v1/messages/{receipts[0]['message_id']}")).json()
            # Every lifecycle event also goes to docbus.status, keyed by message id (while the bus runs).
            status_types: set[str] = set()
            for _ in range(60):
                status_types = {
                    orjson.loads(r["value"])["type"]
                    for r in await read_topic(kafka_bootstrap, "docbus.status")
                    if r["headers"]["message-id"] == receipts[0]["message_id"]
                }
                if {"ACCEPTED", "PUBLISHED"} <= status_types:
                    break
                await asyncio.sleep(0.5)
            assert {"ACCEPTED", "PUBLISHED"} <= status_types
    ours = {r["message_id"]: r for r in receipts}
    records = [r for r in await read_topic(kafka_bootstrap, TOPIC) if r["headers"]["message-id"] in ours]
    counts = Counter(r["headers"]["message-id"] for r in records)
    assert set(counts) == set(ours)
    assert set(counts.values()) == {1}
    for record in records:
        receipt = ours[record["headers"]["message-id"]]
        assert record["key"] == receipt["business_id"].encode()
        assert record["headers"]["sender"] == SENDER
        assert record["headers"]["kind"] == "edoc"
        assert record["headers"]["sha256"] == receipt["sha256"]
        assert record["headers"]["trace-id"]
    published = [e for e in timeline["events"] if e["type"] == "PUBLISHED"]
    assert len(published) == 1
    assert timeline["status"] == "PUBLISHED"
    first = next(r for r in records if r["headers"]["message-id"] == receipts[0]["message_id"])
    assert published[0]["detail"] == {"topic": TOPIC, "partition": first["partition"], "offset": first["offset"]}


@pytest.mark.slow
async def test_kill_9_gateway_then_every_acknowledged_message_reaches_kafka(
    tmp_path: Path, kafka_bootstrap: str, sample_bytes: dict[str, bytes]
) -> None:
    data = tmp_path / "data"
    data.mkdir()
    url = f"sqlite+aiosqlite:///{data / 'docbus.sqlite3'}"
    await upgrade_async(url)
    db = Database(url)
    _, key = await AgencyDirectory(db).add(SENDER, name="Văn phòng Chính phủ")
    await db.dispose()
    env = {
        **os.environ,
        "DOCBUS_DATA_DIR": str(data),
        "DOCBUS_KAFKA_BOOTSTRAP": kafka_bootstrap,
        "DOCBUS_RELAY_LEASE_SECONDS": "4",
        "DOCBUS_BROKER_PUBLISH_TIMEOUT_SECONDS": "2",
    }
    env.pop("DOCBUS_DATABASE_URL", None)
    port = free_port()
    base = f"http://127.0.0.1:{port}"
    proc = spawn_gateway(env, port, tmp_path / "gateway.log")
    try:
        await wait_ready(base, proc)
        async with Load(base, key, sample_bytes[DOC], concurrency=16) as load:
            await load.until(400)
            os.kill(proc.pid, signal.SIGKILL)
            proc.wait()
    except BaseException:
        proc.kill()
        raise
    # The load ends with transport errors once the process is gone; those requests got no 202.
    acknowledged = set(load.accepted)
    proc = spawn_gateway(env, port, tmp_path / "gateway.log")
    try:
        await wait_ready(base, proc)
        await _backlog_drained(base, 90)
    finally:
        proc.send_signal(signal.SIGTERM)
        proc.wait(timeout=30)
    in_kafka = {r["headers"]["message-id"] for r in await read_topic(kafka_bootstrap, TOPIC)}
    missing = acknowledged - in_kafka
    assert not missing, f"{len(missing)} acknowledged messages never reached Kafka"


@pytest.mark.slow
async def test_three_brokers_one_stopped_during_10000_messages(tmp_path: Path, sample_bytes: dict[str, bytes]) -> None:
    cluster = KafkaCluster(tmp_path / "kafka3", brokers=3)
    bootstrap = cluster.start()
    try:
        async for base, key in _gateway_on(tmp_path, bootstrap, kafka_replication_factor=3):
            async with Load(base, key, sample_bytes[DOC], concurrency=32) as load:
                await load.until(2_000)
                await asyncio.to_thread(cluster.stop_broker, 2)
                await load.until(10_000)
            accepted = load.accepted[:]
            assert not load.failures, load.failures[:3]
            await _backlog_drained(base, 180)
        ids = {r["headers"]["message-id"] for r in await read_topic(bootstrap, TOPIC, expect=len(accepted))}
        assert len(accepted) >= 10_000
        assert set(accepted) <= ids, f"{len(set(accepted) - ids)} messages lost"
    finally:
        await asyncio.to_thread(cluster.stop)


@pytest.mark.slow
async def test_kafka_away_for_30_seconds_intake_never_fails_and_backlog_drains(
    tmp_path: Path, sample_bytes: dict[str, bytes]
) -> None:
    cluster = KafkaCluster(tmp_path / "kafka1", brokers=1)
    bootstrap = cluster.start()
    try:
        async for base, key in _gateway_on(tmp_path, bootstrap):
            async with Load(base, key, sample_bytes[DOC], concurrency=8) as load:
                await load.until(200)
                await asyncio.to_thread(cluster.stop_broker, 1)
                stopped_at = len(load.accepted)
                async with httpx.AsyncClient(base_url=base) as client:
                    degraded = False
                    for _ in range(60):
                        ready = await client.get("/readyz")
                        assert ready.status_code == 200
                        if ready.json()["status"] == "degraded":
                            degraded = True
                            break
                        await asyncio.sleep(0.5)
                    assert degraded, "readyz never reported the broker as degraded"
                await asyncio.sleep(30)
                assert len(load.accepted) > stopped_at + 100, "intake stalled while Kafka was away"
                async with httpx.AsyncClient(base_url=base) as client:
                    backlog = (await client.get("/readyz")).json()["outbox_backlog"]
                assert backlog > 0
                await asyncio.to_thread(cluster.start_broker, 1)
                await load.until(len(load.accepted) + 100)
            assert not load.failures, load.failures[:3]
            accepted = load.accepted[:]
            await _backlog_drained(base, 120)
        ids = {r["headers"]["message-id"] for r in await read_topic(bootstrap, TOPIC, expect=len(accepted))}
        assert set(accepted) <= ids, f"{len(set(accepted) - ids)} messages lost"
    finally:
        await asyncio.to_thread(cluster.stop)


async def _topics(bootstrap: str) -> set[str]:
    from aiokafka.admin import AIOKafkaAdminClient

    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap)
    await admin.start()
    try:
        return set(await admin.list_topics())
    finally:
        await admin.close()


def _docbus(env: dict[str, str], *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "docbus.cli", *args], env=env, capture_output=True, text=True, timeout=120
    )


async def test_agency_topics_exist_before_their_first_message(tmp_path: Path, kafka_bootstrap: str) -> None:
    """Registering an agency creates its topic, and a worker creates those of agencies registered without one,
    before its consumers subscribe: a topic made by its first message would reach them only a refresh later."""
    prefix = f"ahead{os.getpid()}x{free_port()}"
    env = {**os.environ, "DOCBUS_DATA_DIR": str(tmp_path / "data"), "DOCBUS_TOPIC_PREFIX": prefix}
    for name in ("DOCBUS_DATABASE_URL", "DOCBUS_ROUTES_FILE"):
        env.pop(name, None)
    with_kafka = {**env, "DOCBUS_KAFKA_BOOTSTRAP": kafka_bootstrap}

    added = _docbus(with_kafka, "agency", "add", SENDER, "--name", "VPCP")
    assert added.returncode == 0, added.stderr
    assert added.stdout.strip().splitlines()[-1].startswith("dbk_")  # the key stays the last line
    assert f"{prefix}.agency.{SENDER}" in await _topics(kafka_bootstrap)

    away = {**env, "DOCBUS_KAFKA_BOOTSTRAP": f"127.0.0.1:{free_port()}", "DOCBUS_BROKER_PUBLISH_TIMEOUT_SECONDS": "1"}
    offline = _docbus(away, "agency", "add", "000.00.00.G17", "--name", "Bộ Tư pháp")
    assert offline.returncode == 0, offline.stderr  # registered all the same; the topic comes with its first message
    assert "not created now" in offline.stderr
    assert offline.stdout.strip().splitlines()[-1].startswith("dbk_")
    assert f"{prefix}.agency.000.00.00.G17" not in await _topics(kafka_bootstrap)

    routes = tmp_path / "routes.toml"
    routes.write_text(
        '[[destination]]\nname = "archive"\nadapter = "file"\n\n[[rule]]\nany = true\ndestination = "archive"\n'
    )
    worker_env = {**with_kafka, "DOCBUS_ROUTES_FILE": str(routes), "DOCBUS_ADAPTERS__ARCHIVE__DIRECTORY": str(tmp_path)}
    with (tmp_path / "worker.log").open("ab") as log:
        worker = subprocess.Popen(
            [sys.executable, "-m", "docbus.cli", "worker", "--log-level", "warning"],
            env=worker_env,
            stdout=log,
            stderr=subprocess.STDOUT,
        )
    try:
        for _ in range(600):
            if f"{prefix}.agency.000.00.00.G17" in await _topics(kafka_bootstrap):
                break
            assert worker.poll() is None, "the worker exited"
            await asyncio.sleep(0.1)
        assert f"{prefix}.agency.000.00.00.G17" in await _topics(kafka_bootstrap)
    finally:
        worker.send_signal(signal.SIGTERM)
        worker.wait(timeout=30)


async def _topic_config(bootstrap: str, topic: str, name: str) -> str | None:
    from aiokafka.admin import AIOKafkaAdminClient
    from aiokafka.admin.config_resource import ConfigResource, ConfigResourceType

    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap)
    await admin.start()
    try:
        responses = await admin.describe_configs([ConfigResource(ConfigResourceType.TOPIC, topic)])
    finally:
        await admin.close()
    for response in responses:
        for resource in response.resources:
            for entry in resource[4]:
                if entry[0] == name:
                    return str(entry[1])
    return None


async def test_topics_docbus_creates_carry_the_configured_retention(tmp_path: Path, kafka_bootstrap: str) -> None:
    """Topics made with DOCBUS_KAFKA_RETENTION_HOURS keep records that long; without it, the broker's default."""
    from docbus.broker import broker_from_settings
    from docbus.store.database import Database

    kept, default = f"docbus.agency.r{uuid.uuid4().hex[:8]}", f"docbus.agency.d{uuid.uuid4().hex[:8]}"
    db = Database(f"sqlite+aiosqlite:///{tmp_path / 'unused.sqlite3'}")
    try:
        for topic, hours in ((kept, 2160.0), (default, None)):
            settings = Settings(data_dir=tmp_path, kafka_bootstrap=kafka_bootstrap, kafka_retention_hours=hours)
            broker = broker_from_settings(settings, db)
            await broker.start()
            try:
                await broker.ensure_topics([topic])
            finally:
                await broker.aclose()
    finally:
        await db.dispose()
    assert await _topic_config(kafka_bootstrap, kept, "retention.ms") == str(2160 * 3_600_000)
    assert await _topic_config(kafka_bootstrap, default, "retention.ms") == str(7 * 24 * 3_600_000)
