"""The Apache Kafka broker, on aiokafka.

Connection string: ``DOCBUS_KAFKA_BOOTSTRAP``, comma-separated ``host:port`` pairs (``127.0.0.1:9092``).

- One idempotent producer (``acks=all``): a publish sends every record, in one batch per partition (see
  :mod:`.kafka_batches`), then waits for all acknowledgements;
  batches up to 1 MiB (10 KB records would otherwise travel one per request), zstd compression when aiokafka's
  codec library ``cramjam`` is installed (a dependency), gzip otherwise. Not lz4: aiokafka compresses lz4 at
  level 9 (the high-compression mode, with no setting to lower it), which on the sample edXML packets costs
  about 12 times zstd's CPU and compresses less.
- Topics are created on first use (``ensure_topics``, cached per process) with the configured partitions and a
  replication factor of ``min(3, brokers)`` unless one is given.
- Bounded: a publish that is not acknowledged within ``publish_timeout`` raises :class:`BrokerUnavailable`,
  and the producer is replaced, because an idempotent producer whose batches failed half-way may refuse to go
  on (sequence numbers out of step); the next publish starts a fresh one and works as soon as Kafka is back.
- Nothing fails at start-up when Kafka is away: every call connects when it needs to.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Coroutine, Mapping, Sequence
from typing import Any

from aiokafka import AIOKafkaProducer
from aiokafka.admin import AIOKafkaAdminClient, NewTopic
from aiokafka.codec import has_zstd
from aiokafka.errors import KafkaConnectionError, TopicAlreadyExistsError, for_code

from docbus.broker.base import (
    Broker,
    BrokerConsumer,
    BrokerError,
    BrokerUnavailable,
    ConfigChange,
    OutgoingRecord,
    PublishedRecord,
    check_topic_name,
)
from docbus.broker.kafka_batches import SentBatch, published, refuse_oversized, send_in_batches
from docbus.broker.kafka_connections import close_leftover_connections, recording_connections
from docbus.broker.kafka_consumer import KafkaConsumer
from docbus.broker.kafka_errors import kafka_bound, translate
from docbus.broker.kafka_topic_configs import align_topic_configs
from docbus.broker.partitioner import default_partition
from docbus.kafka_security import KafkaSecurity

log = logging.getLogger(__name__)

DEFAULT_COMPRESSION = "zstd" if has_zstd() else "gzip"
MIB = 1024 * 1024


class KafkaBroker(Broker):
    """A :class:`Broker` on an Apache Kafka cluster; see the module docstring for how it behaves."""

    def __init__(
        self,
        bootstrap: str,
        *,
        partitions: int = 3,
        replication_factor: int | None = None,
        client_id: str = "docbus",
        publish_timeout: float = 10.0,
        ping_timeout: float = 2.0,
        compression: str | None = DEFAULT_COMPRESSION,
        linger_ms: int = 2,
        max_batch_bytes: int = MIB,
        topic_refresh_interval: float = 10.0,
        max_poll_interval: float = 300.0,
        topic_configs: Mapping[str, str] | None = None,
        security: KafkaSecurity | None = None,
    ) -> None:
        self.bootstrap = bootstrap
        # TLS and SASL, the same for the producer, the admin client and every consumer (one TLS context).
        self._client_options = (security or KafkaSecurity()).client_options()
        self._topic_configs = dict(topic_configs or {})
        self._partitions = partitions
        self._replication_factor = replication_factor
        self._client_id = client_id
        self._publish_timeout = publish_timeout
        self._ping_timeout = ping_timeout
        self._producer_options: dict[str, Any] = {
            "bootstrap_servers": bootstrap,
            "client_id": client_id,
            "acks": "all",
            "enable_idempotence": True,
            "compression_type": compression,
            "partitioner": default_partition,
            "linger_ms": linger_ms,
            "max_batch_size": max_batch_bytes,
            "max_request_size": max(max_batch_bytes, MIB),
            **self._client_options,
        }
        self._topic_refresh_interval = topic_refresh_interval
        self._max_poll_interval = max_poll_interval
        self._producer: AIOKafkaProducer | None = None
        self._admin: AIOKafkaAdminClient | None = None
        self._connect_lock = asyncio.Lock()
        self._known_topics: set[str] = set()
        self._retiring: set[asyncio.Task[None]] = set()

    async def start(self) -> None:
        try:
            async with kafka_bound("start", self._ping_timeout):
                await self._connected_producer()
        except BrokerError as exc:
            log.warning("Kafka at %s is not reachable yet; will connect on demand: %s", self.bootstrap, exc)

    async def aclose(self) -> None:
        producer, self._producer = self._producer, None
        if producer is not None:
            self._retire(producer)
        admin, self._admin = self._admin, None
        if admin is not None:
            await close_admin(admin)
        if self._retiring:
            await asyncio.gather(*self._retiring, return_exceptions=True)

    async def ensure_topics(self, topics: Sequence[str]) -> None:
        if all(t in self._known_topics for t in topics):
            return
        async with kafka_bound("ensure_topics", self._publish_timeout):
            await self._create_topics(topics)

    async def align_topic_configs(self, prefix: str, *, dry_run: bool = False) -> list[ConfigChange]:
        """Bring the existing topics under ``prefix`` to the settings docbus gives the topics it creates (see
        :mod:`.kafka_topic_configs`); nothing to do when docbus sets none."""
        if not self._topic_configs:
            return []
        async with kafka_bound("aligning topic settings", max(self._publish_timeout, 30.0)):
            admin = await self._connected_admin()
            try:
                topics = sorted(t for t in await admin.list_topics() if t.startswith(prefix + "."))
                return await align_topic_configs(admin, topics, self._topic_configs, dry_run=dry_run)
            except BaseException:
                self._drop_admin()
                raise

    async def publish(self, records: Sequence[OutgoingRecord]) -> list[PublishedRecord]:
        if not records:
            return []
        refuse_oversized(records, self._producer_options["max_request_size"])
        producer = None
        sent: list[SentBatch] = []
        try:
            async with kafka_bound("publish", self._publish_timeout):
                await self._create_topics(sorted({r.topic for r in records}))
                producer = await self._connected_producer()
                await send_in_batches(producer, records, sent)
                return await published(sent, len(records))
        except Exception:
            for batch in sent:
                batch.acknowledged.cancel()  # nobody will read their outcome
            if producer is not None and producer is self._producer:
                self._producer = None
                self._retire(producer, grace=1.0)
            raise

    async def ping(self) -> None:
        async with kafka_bound("ping", self._ping_timeout):
            producer = await self._connected_producer()
            await producer.client.fetch_all_metadata()

    def consumer(
        self, group: str, *, topics: Sequence[str] = (), pattern: str | None = None, patience: float = 0.0
    ) -> BrokerConsumer:
        return KafkaConsumer(
            self.bootstrap,
            group,
            topics=topics,
            pattern=pattern,
            patience=patience,
            client_id=self._client_id,
            topic_refresh_interval=self._topic_refresh_interval,
            max_poll_interval=self._max_poll_interval,
            timeout=self._publish_timeout,
            client_options=self._client_options,
        )

    async def _connected_producer(self) -> AIOKafkaProducer:
        """The producer, started now if there is none; keeps trying until the caller's time bound."""
        async with self._connect_lock:
            while self._producer is None:
                producer = AIOKafkaProducer(**self._producer_options)
                try:
                    with recording_connections(producer):
                        await producer.start()
                except KafkaConnectionError:
                    self._retire(producer)
                    await asyncio.sleep(0.5)
                    continue
                except BaseException:
                    self._retire(producer)
                    raise
                self._producer = producer
            return self._producer

    async def _connected_admin(self) -> AIOKafkaAdminClient:
        async with self._connect_lock:
            while self._admin is None:
                admin = AIOKafkaAdminClient(
                    bootstrap_servers=self.bootstrap, client_id=self._client_id, **self._client_options
                )
                try:
                    with recording_connections(admin):
                        await admin.start()
                    if self._replication_factor is None:
                        brokers = (await admin.describe_cluster())["brokers"]
                        self._replication_factor = max(1, min(3, len(brokers)))
                except KafkaConnectionError:
                    await close_admin(admin)
                    await asyncio.sleep(0.5)
                    continue
                except BaseException:
                    await close_admin(admin)
                    raise
                self._admin = admin
            return self._admin

    async def _create_topics(self, topics: Sequence[str]) -> None:
        missing = sorted({t for t in topics if t not in self._known_topics})
        if not missing:
            return
        for topic in missing:
            check_topic_name(topic)
        admin = await self._connected_admin()
        try:
            response = await admin.create_topics(
                [
                    NewTopic(t, self._partitions, self._replication_factor, topic_configs=self._topic_configs)
                    for t in missing
                ],
                timeout_ms=int(self._publish_timeout * 1000),
            )
        except BaseException:
            self._drop_admin()
            raise
        for topic, code, *_ in response.topic_errors:
            if code and code != TopicAlreadyExistsError.errno:
                raise translate(f"creating topic {topic}", for_code(code)())
            self._known_topics.add(topic)

    def _drop_admin(self) -> None:
        """A fresh admin client next time: its connections may be the problem."""
        stale, self._admin = self._admin, None
        if stale is not None:
            self._in_background(close_admin(stale))

    def _retire(self, producer: AIOKafkaProducer, *, grace: float = 5.0) -> None:
        """Close ``producer`` in the background; after ``grace`` seconds, drop what Kafka has not taken."""
        self._in_background(_close_producer(producer, grace))

    def _in_background(self, closing: Coroutine[Any, Any, None]) -> None:
        task = asyncio.create_task(closing)
        self._retiring.add(task)
        task.add_done_callback(self._retiring.discard)


async def close_admin(admin: AIOKafkaAdminClient) -> None:
    """Close ``admin`` and every connection it opened, whatever state it is in."""
    try:
        await admin.close()
    except Exception:
        log.debug("closing a Kafka admin client failed", exc_info=True)
    finally:
        await close_leftover_connections(admin, admin._client)


async def _close_producer(producer: AIOKafkaProducer, grace: float) -> None:
    try:
        async with asyncio.timeout(grace):
            await producer.stop()
        await close_leftover_connections(producer, producer.client)
        return
    except TimeoutError:
        pass
    except asyncio.CancelledError:
        # The caller is going away (a shutdown cut short): still close the connections, then go.
        await _abandon(producer)
        raise
    except Exception:
        log.exception("stopping a Kafka producer failed")
    await _abandon(producer)


async def _abandon(producer: AIOKafkaProducer) -> None:
    """Fail what ``producer`` still holds and close its sender and its connections, each step on its own.

    An idempotent aiokafka producer retries its batches for ever, and ``stop`` waits for them; while the
    brokers are away its sender even asks for metadata in a loop without backoff. aiokafka has no public way
    to give up, so fail its batches (nobody waits for them any more) and close its parts directly."""
    with contextlib.suppress(Exception):
        accumulator = producer._message_accumulator
        # aiokafka removes a finished batch from this set even when a retry already took it out (KeyError).
        accumulator._pending_batches = _DiscardingSet(accumulator._pending_batches)
        batches = [*accumulator._pending_batches, *(b for queue in accumulator._batches.values() for b in queue)]
        accumulator.fail_all(BrokerUnavailable("publish abandoned: Kafka did not acknowledge in time"))
        for batch in batches:  # mark the failures as seen, or asyncio logs each one as never retrieved
            for future in (batch.future, batch._drain_waiter, *(f for f, _ in batch._msg_futures)):
                if future.done() and not future.cancelled():
                    future.exception()
    with contextlib.suppress(Exception):
        await producer._sender.close()
    with contextlib.suppress(Exception):
        await producer.client.close()
    await close_leftover_connections(producer, producer.client)


class _DiscardingSet(set[Any]):
    def remove(self, item: Any) -> None:
        self.discard(item)
