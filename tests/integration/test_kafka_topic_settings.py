"""Existing topics follow DOCBUS_KAFKA_RETENTION_HOURS on real Apache Kafka: the broker call, the command and a
worker at start; a topic's other settings of its own are kept, other buses' topics are not touched."""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
import uuid
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from aiokafka.admin import AIOKafkaAdminClient, NewTopic
from aiokafka.admin.config_resource import ConfigResource, ConfigResourceType

from docbus.broker.base import ConfigChange
from docbus.broker.kafka import KafkaBroker

from ..conftest import require_service
from .test_cli import docbus

pytestmark = pytest.mark.kafka
HOUR_MS = "3600000"


@pytest.fixture
def kafka_bootstrap() -> str:
    return require_service("DOCBUS_TEST_KAFKA_BOOTSTRAP", "Apache Kafka")


@pytest.fixture
async def admin(kafka_bootstrap: str) -> AsyncIterator[AIOKafkaAdminClient]:
    client = AIOKafkaAdminClient(bootstrap_servers=kafka_bootstrap)
    await client.start()
    try:
        yield client
    finally:
        await client.close()


async def own_settings(admin: AIOKafkaAdminClient, topic: str) -> dict[str, str]:
    """The settings the topic has of its own (not the broker's defaults)."""
    (response,) = await admin.describe_configs([ConfigResource(ConfigResourceType.TOPIC, topic)])
    ((error, _msg, _type, _name, entries),) = response.resources
    assert error == 0
    return {e[0]: e[1] for e in entries if e[3] == 1}


async def topics_made_before(admin: AIOKafkaAdminClient, prefix: str) -> tuple[str, str, str, str]:
    """An agency topic with no settings of its own, one with an operator's own max.message.bytes and an old
    retention, the status topic, and another bus' topic; all made before the retention was configured."""
    plain, tuned, status, foreign = (
        f"{prefix}.agency.000.00.00.G22",
        f"{prefix}.agency.000.00.00.H41",
        f"{prefix}.status",
        f"other{prefix}.agency.000.00.00.G22",
    )
    await admin.create_topics(
        [
            NewTopic(plain, 1, 1),
            NewTopic(tuned, 1, 1, topic_configs={"max.message.bytes": "2097152", "retention.ms": "604800000"}),
            NewTopic(status, 1, 1),
            NewTopic(foreign, 1, 1),
        ]
    )
    return plain, tuned, status, foreign


async def test_existing_topics_get_the_configured_retention_and_keep_their_own_settings(
    kafka_bootstrap: str, admin: AIOKafkaAdminClient
) -> None:
    prefix = f"t{uuid.uuid4().hex[:10]}"
    plain, tuned, status, foreign = await topics_made_before(admin, prefix)
    broker = KafkaBroker(kafka_bootstrap, topic_configs={"retention.ms": HOUR_MS})
    try:
        planned = await broker.align_topic_configs(prefix, dry_run=True)
        expected = [
            ConfigChange(plain, "retention.ms", None, HOUR_MS),
            ConfigChange(tuned, "retention.ms", "604800000", HOUR_MS),
            ConfigChange(status, "retention.ms", None, HOUR_MS),
        ]
        assert planned == expected
        assert "retention.ms" not in await own_settings(admin, plain)  # a dry run changes nothing

        assert await broker.align_topic_configs(prefix) == expected
        assert await own_settings(admin, plain) == {"retention.ms": HOUR_MS}
        assert await own_settings(admin, tuned) == {"retention.ms": HOUR_MS, "max.message.bytes": "2097152"}
        assert await own_settings(admin, status) == {"retention.ms": HOUR_MS}
        assert await own_settings(admin, foreign) == {}  # another bus' topics are not ours
        assert await broker.align_topic_configs(prefix) == []  # in line now
    finally:
        await broker.aclose()

    unset = KafkaBroker(kafka_bootstrap)  # no retention configured: docbus sets nothing, changes nothing
    try:
        assert await unset.align_topic_configs(prefix) == []
    finally:
        await unset.aclose()
    assert await own_settings(admin, plain) == {"retention.ms": HOUR_MS}


async def test_the_command_and_a_starting_worker_bring_topics_in_line(
    kafka_bootstrap: str, admin: AIOKafkaAdminClient, tmp_path: Path
) -> None:
    prefix = f"t{uuid.uuid4().hex[:10]}"
    plain, tuned, status, _foreign = await topics_made_before(admin, prefix)
    env = {
        **os.environ,
        "DOCBUS_DATA_DIR": str(tmp_path / "data"),
        "DOCBUS_KAFKA_BOOTSTRAP": kafka_bootstrap,
        "DOCBUS_TOPIC_PREFIX": prefix,
        "DOCBUS_KAFKA_RETENTION_HOURS": "2",
    }
    for name in ("DOCBUS_DATABASE_URL", "DOCBUS_ROUTES_FILE"):
        env.pop(name, None)

    dry = docbus(env, "topics", "sync", "--dry-run")
    assert dry.returncode == 0, dry.stderr
    assert f"{plain}\tretention.ms\twould change (the broker's default) -> 7200000" in dry.stdout
    assert f"{tuned}\tretention.ms\twould change 604800000 -> 7200000" in dry.stdout
    assert "retention.ms" not in await own_settings(admin, plain)
    synced = docbus(env, "topics", "sync")
    assert synced.returncode == 0, synced.stderr
    assert len(synced.stdout.splitlines()) == 3
    assert await own_settings(admin, tuned) == {"retention.ms": "7200000", "max.message.bytes": "2097152"}
    again = docbus(env, "topics", "sync")
    assert "already has the configured settings" in again.stdout
    without_kafka = docbus({k: v for k, v in env.items() if k != "DOCBUS_KAFKA_BOOTSTRAP"}, "topics", "sync")
    assert without_kafka.returncode == 1 and "DOCBUS_KAFKA_BOOTSTRAP" in without_kafka.stderr

    # The retention is shortened again; a worker that starts brings every topic to it on its own.
    env["DOCBUS_KAFKA_RETENTION_HOURS"] = "1"
    worker = subprocess.Popen(
        [sys.executable, "-m", "docbus.cli", "worker", "--log-level", "info"],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        for _ in range(120):
            retentions = [(await own_settings(admin, t)).get("retention.ms") for t in (plain, tuned, status)]
            if retentions == [HOUR_MS] * 3:
                break
            await asyncio.sleep(0.25)
        else:
            pytest.fail("the worker did not change the topics' retention within 30 s")
    finally:
        worker.terminate()
        _out, log = worker.communicate(timeout=30)
    assert f"topic {tuned}: retention.ms changed from 7200000 to {HOUR_MS}" in log
    assert (await own_settings(admin, tuned))["max.message.bytes"] == "2097152"
