"""Every connection a Kafka client opens is closed, even when its start was cut short.

The broker here is a loopback TCP server that speaks just enough of Kafka's protocol: it answers the version
lookup every connection begins with and never answers the metadata request that follows, which is where a
start bounded in time gets cancelled. aiokafka loses such a bootstrap connection; docbus must still close it.
"""

from __future__ import annotations

import asyncio
import struct

import pytest
from aiokafka.protocol import admin as kafka_admin

from docbus.broker.kafka import KafkaBroker
from docbus.broker.kafka_consumer import KafkaConsumer

API_VERSIONS = 18


class SilentBroker:
    """Answers ApiVersions, then swallows every other request; counts the connections still open."""

    def __init__(self) -> None:
        self.accepted = 0
        self.open = 0
        self.metadata_asked = asyncio.Event()
        self._server: asyncio.Server | None = None

    async def start(self) -> str:
        self._server = await asyncio.start_server(self._serve, "127.0.0.1", 0)
        port = self._server.sockets[0].getsockname()[1]
        return f"127.0.0.1:{port}"

    async def close(self) -> None:
        assert self._server is not None
        self._server.close()
        await self._server.wait_closed()

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.accepted += 1
        self.open += 1
        try:
            while True:
                size = struct.unpack(">i", await reader.readexactly(4))[0]
                request = await reader.readexactly(size)
                api_key, version, correlation = struct.unpack(">hhi", request[:8])
                if api_key != API_VERSIONS:
                    self.metadata_asked.set()
                    continue  # never answered: the client waits until it gives up
                response = getattr(kafka_admin, f"ApiVersionResponse_v{version}")
                fields = {"error_code": 0, "api_versions": [(k, 0, 9) for k in range(0, 60)]}
                if version >= 1:
                    fields["throttle_time_ms"] = 0
                body = struct.pack(">i", correlation) + response(**fields).encode()
                writer.write(struct.pack(">i", len(body)) + body)
                await writer.drain()
        except (asyncio.IncompleteReadError, ConnectionError):
            pass
        finally:
            self.open -= 1
            writer.close()


async def settled(broker: SilentBroker, seconds: float = 5.0) -> int:
    """The connections still open once the client had ``seconds`` to close them."""
    deadline = asyncio.get_running_loop().time() + seconds
    while broker.open and asyncio.get_running_loop().time() < deadline:
        await asyncio.sleep(0.05)
    return broker.open


@pytest.fixture
async def silent_broker():
    broker = SilentBroker()
    bootstrap = await broker.start()
    try:
        yield broker, bootstrap
    finally:
        await broker.close()


async def test_a_producer_cut_short_while_bootstrapping_leaves_no_connection_open(silent_broker) -> None:
    broker, bootstrap = silent_broker
    bus = KafkaBroker(bootstrap, ping_timeout=0.5)
    await bus.start()  # bounded: gives up while the broker sits on the metadata request
    assert broker.metadata_asked.is_set() and broker.accepted >= 1
    await bus.aclose()
    assert await settled(broker) == 0


async def test_a_consumer_stopped_while_bootstrapping_leaves_no_connection_open(silent_broker) -> None:
    broker, bootstrap = silent_broker
    consumer = KafkaConsumer(
        bootstrap,
        "docbus-test-group",
        topics=["docbus.agency.000.00.00.G22"],
        pattern=None,
        client_id="docbus-test",
        topic_refresh_interval=10.0,
        max_poll_interval=300.0,
        timeout=1.0,
    )
    polling = asyncio.create_task(consumer.poll(max_records=10, timeout=0.1))
    await asyncio.wait_for(broker.metadata_asked.wait(), 10)
    polling.cancel()
    with pytest.raises(asyncio.CancelledError):
        await polling
    await consumer.aclose()
    assert broker.accepted >= 1
    assert await settled(broker) == 0
