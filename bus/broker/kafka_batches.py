"""Publishing a list of records as whole batches, one per partition, instead of record by record.

aiokafka's ``send`` does, for every record, what a publish of many records needs once per partition: it looks up
the topic's metadata, picks the partition, finds the partition's open batch and gives the record a future of its
own. The relay publishes a batch of documents at a time and the status stream hundreds of events, so that
per-record path was most of what publishing cost in Python. Here the records are appended to one
``BatchBuilder`` per partition (a new one when it is full) and each builder goes out with ``send_batch``; a
record's offset is its batch's base offset plus its position in the batch. On a one-broker Kafka on loopback, 500
records of 400 bytes with two headers each: about 9 µs of CPU per record against about 20 µs through ``send``.

The rest is what ``send`` guaranteed: a record goes to the partition the same partitioner picks (so one business
id's records stay in order in one partition), batches of a partition leave in the order they were filled, a
record that no request could carry is refused before anything is sent (as ``send`` refused it), and the
idempotent producer numbers the batches as it sends them.
"""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from aiokafka import AIOKafkaProducer
from aiokafka.record.default_records import DefaultRecordBatchBuilder

from docbus.broker.base import OutgoingRecord, PublishedRecord, RecordRejected
from docbus.broker.partitioner import default_partition


@dataclass
class _Filling:
    """A partition's batch being filled: the builder and which records (by index in the publish) it holds."""

    builder: Any
    indexes: list[int] = field(default_factory=list)


@dataclass(frozen=True)
class SentBatch:
    """A batch handed to the producer: its topic and partition, the records it holds and its acknowledgement."""

    topic: str
    partition: int
    indexes: list[int]
    acknowledged: asyncio.Future[Any]


def refuse_oversized(records: Sequence[OutgoingRecord], max_request_size: int) -> None:
    """:class:`RecordRejected` for a record no request could carry, before anything is sent (``send`` raised
    ``MessageSizeTooLargeError`` for it)."""
    for record in records:
        size = DefaultRecordBatchBuilder.estimate_size_in_bytes(record.key, record.value, list(record.headers))
        if size > max_request_size:
            raise RecordRejected(
                f"publish: a record of {size} bytes for {record.topic} is larger than the largest request "
                f"({max_request_size} bytes)"
            )


async def send_in_batches(producer: AIOKafkaProducer, records: Sequence[OutgoingRecord], sent: list[SentBatch]) -> None:
    """Hand ``records`` to ``producer`` as batches, adding each to ``sent`` as it goes (so that a caller whose
    publish fails half-way knows which acknowledgements are still coming); :func:`published` awaits them. Check
    the records' sizes first (:func:`refuse_oversized`)."""
    partitions: dict[str, tuple[list[int], list[int]]] = {}
    filling: dict[tuple[str, int], _Filling] = {}
    for index, record in enumerate(records):
        known = partitions.get(record.topic)
        if known is None:
            await producer.partitions_for(record.topic)  # waits for the topic's metadata
            cluster = producer.client.cluster
            known = partitions[record.topic] = (
                list(cluster.partitions_for_topic(record.topic) or ()),
                list(cluster.available_partitions_for_topic(record.topic) or ()),
            )
        partition = default_partition(record.key, known[0], known[1])
        place = (record.topic, partition)
        batch = filling.get(place)
        if batch is None:
            batch = filling[place] = _Filling(producer.create_batch())
        headers = list(record.headers)
        if batch.builder.append(key=record.key, value=record.value, timestamp=None, headers=headers) is None:
            sent.append(await _send(producer, place, batch))  # full: it goes now, the record starts the next
            batch = filling[place] = _Filling(producer.create_batch())
            batch.builder.append(key=record.key, value=record.value, timestamp=None, headers=headers)
        batch.indexes.append(index)
    for place, batch in filling.items():
        sent.append(await _send(producer, place, batch))


async def _send(producer: AIOKafkaProducer, place: tuple[str, int], batch: _Filling) -> SentBatch:
    batch.builder.close()
    topic, partition = place
    acknowledged = await producer.send_batch(batch.builder, topic, partition=partition)
    return SentBatch(topic, partition, batch.indexes, acknowledged)


async def published(sent: Sequence[SentBatch], count: int) -> list[PublishedRecord]:
    """Wait for every batch's acknowledgement; each record's topic, partition and offset, in publishing order.
    The first failure is raised once every batch has finished."""
    outcomes = await asyncio.gather(*(batch.acknowledged for batch in sent), return_exceptions=True)
    acknowledgements: list[Any] = []  # aiokafka's RecordMetadata: the batch's base offset
    for outcome in outcomes:
        if isinstance(outcome, BaseException):
            raise outcome
        acknowledgements.append(outcome)
    placed: dict[int, PublishedRecord] = {}
    for batch, metadata in zip(sent, acknowledgements, strict=True):
        for position, index in enumerate(batch.indexes):
            placed[index] = PublishedRecord(batch.topic, batch.partition, metadata.offset + position)
    return [placed[index] for index in range(count)]
