"""Real Apache Kafka for tests: clusters the test controls (deploy/kafka/kafka.sh) and a plain read-back."""

from __future__ import annotations

import asyncio
import random
import socket
import subprocess
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from aiokafka import AIOKafkaConsumer, TopicPartition

from docbus.settings import Settings

from ..conftest import require_service

REPO = Path(__file__).resolve().parents[2]
KAFKA_SH = REPO / "deploy" / "kafka" / "kafka.sh"


def free_port_block(size: int) -> int:
    """A base port with ``size`` client ports, ``size`` controller ports (base+100..) and ``size`` SASL_SSL client
    ports (base+200..) all free.

    Drawn below the kernel's ephemeral range (32768+ here and on most Linux machines), so an outgoing connection
    cannot take one of them between this probe and the broker's bind."""
    low, high = 20_000, 32_000 - 200 - size
    for _ in range(200):
        base = random.randrange(low, high)
        ports = [base + offset + i for offset in (0, 100, 200) for i in range(size)]
        try:
            for port in ports:
                with socket.socket() as probe:
                    probe.bind(("127.0.0.1", port))
        except OSError:
            continue
        return base
    raise RuntimeError("no free port block")


@dataclass
class KafkaCluster:
    """A Kafka cluster owned by one test: started, broken and stopped on purpose."""

    directory: Path
    brokers: int = 1
    base_port: int = 0
    bootstrap: str = ""

    def _run(self, *args: str) -> str:
        result = subprocess.run(
            ["bash", str(KAFKA_SH), *args, "--dir", str(self.directory)],
            capture_output=True,
            text=True,
            check=False,
            timeout=240,
        )
        if result.returncode != 0:
            raise RuntimeError(f"kafka.sh {' '.join(args)} failed:\n{result.stdout}\n{result.stderr}")
        return result.stdout.strip().splitlines()[-1] if result.stdout.strip() else ""

    def start(self) -> str:
        self.base_port = self.base_port or free_port_block(self.brokers)
        self.bootstrap = self._run("start", "--brokers", str(self.brokers), "--port", str(self.base_port))
        return self.bootstrap

    def stop_broker(self, k: int, *, kill: bool = False) -> None:
        self._run("stop-broker", str(k), *(["--kill"] if kill else []))

    def start_broker(self, k: int) -> None:
        self._run("start-broker", str(k))

    def stop(self) -> None:
        self._run("stop")


def secure_kafka_env() -> dict[str, str]:
    """The ``DOCBUS_KAFKA_*`` settings of a client of the test Kafka's SASL_SSL listener (SCRAM-SHA-512 over TLS,
    the cluster's own CA), as ``kafka.sh start`` wrote them; the test command names the file."""
    path = Path(require_service("DOCBUS_TEST_KAFKA_SECURE_ENV", "Apache Kafka's SASL_SSL listener"))
    return dict(line.split("=", 1) for line in path.read_text().splitlines() if "=" in line)


def secure_kafka_settings(**overrides: Any) -> Settings:
    """Settings for that listener (environment names as keys, as in an env file), with ``overrides`` on top."""
    env = {**secure_kafka_env(), **overrides}
    fields = {name.removeprefix("DOCBUS_").lower(): value for name, value in env.items()}
    return Settings(**fields)


async def read_topic(
    bootstrap: str,
    topic: str,
    *,
    timeout: float = 60.0,
    expect: int | None = None,
    client_options: dict[str, Any] | None = None,
) -> list[dict]:
    """Every record of ``topic`` from the beginning to its current end (no consumer group)."""
    consumer = AIOKafkaConsumer(
        bootstrap_servers=bootstrap, enable_auto_commit=False, auto_offset_reset="earliest", **(client_options or {})
    )
    await consumer.start()
    records: list[dict] = []
    try:
        deadline = asyncio.get_running_loop().time() + timeout
        partitions = None
        while partitions is None:
            partitions = consumer.partitions_for_topic(topic)
            if partitions is None:
                await consumer._client.force_metadata_update()
                partitions = consumer.partitions_for_topic(topic)
                if partitions is None:
                    if asyncio.get_running_loop().time() > deadline:
                        return []
                    await asyncio.sleep(0.2)
        tps = [TopicPartition(topic, p) for p in sorted(partitions)]
        consumer.assign(tps)
        await consumer.seek_to_beginning(*tps)
        while True:
            end = await consumer.end_offsets(tps)
            positions = {tp: await consumer.position(tp) for tp in tps}
            done = all(positions[tp] >= end[tp] for tp in tps)
            if done and (expect is None or len(records) >= expect):
                return records
            if asyncio.get_running_loop().time() > deadline:
                return records
            batch = await consumer.getmany(timeout_ms=500, max_records=5000)
            for tp_records in batch.values():
                for r in tp_records:
                    records.append(
                        {
                            "partition": r.partition,
                            "offset": r.offset,
                            "key": r.key,
                            "value": r.value,
                            "headers": {k: v.decode() for k, v in r.headers},
                        }
                    )
    finally:
        await consumer.stop()
