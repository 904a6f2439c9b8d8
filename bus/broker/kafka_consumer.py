"""A Kafka consumer-group member on aiokafka: manual commits, earliest offset for a new group.

Kafka balances a group's partitions over its members. A pattern subscription (and ``topics`` next to it: they
are folded into one regular expression, which aiokafka needs) is re-evaluated every ``topic_refresh_interval``
seconds, so topics created later join within that time; their records are all read, from the first.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import re
from collections.abc import Mapping, Sequence
from typing import Any

from aiokafka import AIOKafkaConsumer, TopicPartition
from aiokafka.errors import CommitFailedError, IllegalStateError, KafkaConnectionError

from docbus.broker.base import BrokerConsumer, BrokerError, ConsumedRecord, ConsumerFenced, next_offsets
from docbus.broker.kafka_connections import close_leftover_connections, recording_connections
from docbus.broker.kafka_errors import kafka_bound

log = logging.getLogger(__name__)


REBALANCE_GRACE_SECONDS = 30.0
PATIENT_FETCH_BYTES = 1024 * 1024  # what a patient consumer's fetch waits to gather (or until its patience runs out)


class KafkaConsumer(BrokerConsumer):
    """A member of a Kafka consumer group; made by :meth:`KafkaBroker.consumer`."""

    def __init__(
        self,
        bootstrap: str,
        group: str,
        *,
        topics: Sequence[str],
        pattern: str | None,
        client_id: str,
        topic_refresh_interval: float,
        max_poll_interval: float,
        timeout: float,
        patience: float = 0.0,
        client_options: Mapping[str, Any] | None = None,
    ) -> None:
        if not topics and pattern is None:
            raise ValueError("a consumer needs topics, a pattern, or both")
        self._topics = sorted(set(topics))
        self._pattern = None
        if pattern is not None:
            # aiokafka tests ``pattern.match(topic)``; the seam promises a whole-name match.
            alternatives = [f"(?:{pattern})", *(re.escape(t) for t in self._topics)]
            self._pattern = re.compile(f"(?:{'|'.join(alternatives)})\\Z")
        self._options = {
            "bootstrap_servers": bootstrap,
            "client_id": client_id,
            "group_id": group,
            "enable_auto_commit": False,
            "auto_offset_reset": "earliest",
            "metadata_max_age_ms": int(topic_refresh_interval * 1000),
            # A member that does not poll for this long leaves the group; its partitions go to the others.
            "max_poll_interval_ms": int(max_poll_interval * 1000),
            **(client_options or {}),  # TLS and SASL (see docbus.kafka_security)
        }
        if patience > 0:
            # The broker answers a fetch once it has this much or the wait is over: under load a handful of
            # fetches a second instead of one for every few records (each costs the broker and this client).
            self._options["fetch_min_bytes"] = PATIENT_FETCH_BYTES
            self._options["fetch_max_wait_ms"] = max(1, int(patience * 1000))
        self._timeout = timeout
        self._consumer: AIOKafkaConsumer | None = None
        self._rewind = False

    async def start(self) -> None:
        try:
            async with kafka_bound("consumer start", self._timeout):
                await self._connected()
        except BrokerError as exc:
            log.warning("consumer of group %s cannot reach Kafka yet: %s", self._options["group_id"], exc)

    async def aclose(self) -> None:
        consumer, self._consumer = self._consumer, None
        if consumer is not None:
            await _stop(consumer, self._timeout)

    async def poll(self, max_records: int = 500, timeout: float = 1.0) -> list[ConsumedRecord]:
        # A poll may have to wait for a rebalance (a member died: its session must expire first), which takes
        # longer than a publish; the bound only has to tell "Kafka is away" from "Kafka is busy".
        async with kafka_bound("poll", self._timeout + timeout + REBALANCE_GRACE_SECONDS):
            consumer = await self._connected()
            if self._rewind:
                await self._seek_to_committed_now(consumer)
            batches = await consumer.getmany(timeout_ms=int(timeout * 1000), max_records=max_records)
        return [
            ConsumedRecord(
                topic=m.topic,
                partition=m.partition,
                offset=m.offset,
                key=m.key,
                value=m.value if m.value is not None else b"",
                headers=tuple((name, bytes(value)) for name, value in m.headers),
                timestamp_ms=m.timestamp,
            )
            for messages in batches.values()
            for m in messages
        ]

    async def commit(self, records: Sequence[ConsumedRecord]) -> None:
        if not records:
            return
        offsets = {TopicPartition(t, p): offset for (t, p), offset in next_offsets(records).items()}
        async with kafka_bound("commit", self._timeout):
            consumer = await self._connected()
            try:
                await consumer.commit(offsets)
            except (CommitFailedError, IllegalStateError) as exc:
                # The group rebalanced: the partitions (or this member) moved; their new owner re-reads them.
                raise ConsumerFenced(f"commit refused after a rebalance: {exc!r}") from exc

    async def seek_to_committed(self) -> None:
        # Done by the next poll, so that this never fails (it runs in error handlers, maybe while Kafka is away).
        self._rewind = True

    async def _seek_to_committed_now(self, consumer: AIOKafkaConsumer) -> None:
        for tp in consumer.assignment():
            committed = await consumer.committed(tp)
            if committed is None:
                await consumer.seek_to_beginning(tp)
            else:
                consumer.seek(tp, committed)
        self._rewind = False

    async def _connected(self) -> AIOKafkaConsumer:
        while self._consumer is None:
            consumer = AIOKafkaConsumer(**self._options)
            if self._pattern is not None:
                consumer.subscribe(pattern=self._pattern)
            else:
                consumer.subscribe(topics=self._topics)
            try:
                with recording_connections(consumer):
                    await consumer.start()
            except KafkaConnectionError:
                await _stop(consumer, self._timeout)
                await asyncio.sleep(0.5)
                continue
            except BaseException:
                await _stop(consumer, self._timeout)
                raise
            self._consumer = consumer
        return self._consumer


async def _stop(consumer: AIOKafkaConsumer, seconds: float) -> None:
    """Leave the group; give up after ``seconds`` when Kafka is away or slow (the group notices the member is
    gone), and then close the consumer's parts directly."""
    try:
        async with asyncio.timeout(seconds):
            await consumer.stop()
        await close_leftover_connections(consumer, consumer._client)
        return
    except asyncio.CancelledError:
        await _close_parts(consumer, seconds)  # the caller is going away: still close the connections, then go
        raise
    except Exception as exc:
        log.info("consumer of group %s did not leave it in %s s: %r", consumer._group_id, seconds, exc)
    await _close_parts(consumer, seconds)


async def _close_parts(consumer: AIOKafkaConsumer, seconds: float) -> None:
    """What an interrupted ``stop`` left open. ``stop`` first waits for the group coordinator, which may be in
    the middle of a rebalance for longer than the caller has; cut there, it never reaches the fetcher or the
    client, whose connections and heartbeats would stay open for the life of the process."""
    coordinator: Any = consumer._coordinator
    names = ("_coordination_task", "_heartbeat_task", "_commit_refresh_task", "_reset_committed_task")
    tasks = [t for t in (getattr(coordinator, n, None) for n in names) if isinstance(t, asyncio.Task) and not t.done()]
    for task in tasks:
        task.cancel()
    if tasks:
        await asyncio.wait(tasks, timeout=seconds)
    if consumer._fetcher is not None:
        with contextlib.suppress(Exception):
            await consumer._fetcher.close()
    with contextlib.suppress(Exception):
        await consumer._client.close()
    await close_leftover_connections(consumer, consumer._client)
