"""The broker seam: what the outbox relay publishes to and what adapter workers consume from.

Two implementations keep the same contract (``tests/integration/test_broker_contract.py`` runs on both):
:class:`~docbus.broker.kafka.KafkaBroker` (Apache Kafka) and :class:`~docbus.broker.embedded.EmbeddedBroker`
(a durable log in the bus's own SQL database). The contract:

- ``publish`` returns only when every record is durably acknowledged, one :class:`PublishedRecord` per input
  record, in input order; records with the same key land in the same partition, in publish order.
- Topics are created on first publish (``ensure_topics`` creates them ahead, e.g. for consumers).
- Consumers in a group read from the earliest record the group has not committed; ``commit`` moves the group
  past the given records, ``seek_to_committed`` rewinds to the last commit (delivery is at-least-once).

Errors of the seam, all under the package-wide :class:`~docbus.errors.DocbusError`::

    BrokerError             Raised for any failure the broker seam reports.
    ├── BrokerUnavailable   Raised when the broker cannot be reached or does not acknowledge in time (retriable).
    ├── RecordRejected      Raised when the broker refuses a record itself (too large, invalid topic name).
    └── ConsumerFenced      Raised by commit when the group gave this consumer's partitions to another member.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Sequence
from dataclasses import dataclass
from types import TracebackType
from typing import ClassVar, Self

from docbus.errors import DocbusError

Headers = tuple[tuple[str, bytes], ...]


@dataclass(frozen=True, slots=True)
class OutgoingRecord:
    """A record to publish; ``key`` chooses the partition (same key, same partition, same order)."""

    topic: str
    key: bytes | None
    value: bytes
    headers: Headers = ()


@dataclass(frozen=True, slots=True)
class PublishedRecord:
    """Where the broker stored one published record."""

    topic: str
    partition: int
    offset: int


@dataclass(frozen=True, slots=True)
class ConsumedRecord:
    """A record as a consumer receives it; ``timestamp_ms`` is when it was published (epoch milliseconds)."""

    topic: str
    partition: int
    offset: int
    key: bytes | None
    value: bytes
    headers: Headers
    timestamp_ms: int


class BrokerError(DocbusError):
    """Raised for any failure the broker seam reports."""

    retriable: ClassVar[bool] = False


class BrokerUnavailable(BrokerError):
    """Raised when the broker cannot be reached, or does not acknowledge, within the configured bound.

    Nothing is known about records of a failed publish: some may have been stored. Publish them again (delivery
    is at-least-once; consumers deduplicate by message id).
    """

    retriable = True


class RecordRejected(BrokerError):
    """Raised when the broker refuses a record for what it is (too large, invalid topic name)."""


class ConsumerFenced(BrokerError):
    """Raised by ``commit`` when the group has handed this consumer's partitions to another member.

    The uncommitted records will be delivered again to their new owner; keep polling.
    """


_TOPIC_CHARS = frozenset("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789._-")


def check_topic_name(topic: str) -> None:
    """Refuse a name Kafka would refuse, so that a topic that works on one broker works on the other."""
    if not 0 < len(topic) <= 249 or topic in {".", ".."} or not _TOPIC_CHARS.issuperset(topic):
        raise RecordRejected(f"invalid topic name {topic!r}: 1 to 249 characters of [a-zA-Z0-9._-]")


def next_offsets(records: Sequence[ConsumedRecord]) -> dict[tuple[str, int], int]:
    """The offsets to commit after ``records``: per (topic, partition), the highest offset plus one."""
    positions: dict[tuple[str, int], int] = {}
    for record in records:
        tp = (record.topic, record.partition)
        positions[tp] = max(positions.get(tp, 0), record.offset + 1)
    return positions


class BrokerConsumer(ABC):
    """A member of a consumer group. Not safe for concurrent use: one task polls, processes and commits."""

    async def start(self) -> None:
        """Connect and join the group; ``poll`` starts the consumer if this was not called."""

    async def aclose(self) -> None:
        """Leave the group; uncommitted records go to the next member."""

    @abstractmethod
    async def poll(self, max_records: int = 500, timeout: float = 1.0) -> list[ConsumedRecord]:
        """Up to ``max_records`` records, waiting up to ``timeout`` seconds for the first; ``[]`` if none came."""

    @abstractmethod
    async def commit(self, records: Sequence[ConsumedRecord]) -> None:
        """Mark ``records`` (and everything before them in their partitions) as processed for the group."""

    @abstractmethod
    async def seek_to_committed(self) -> None:
        """Deliver again everything after the group's last commit (after a processing failure)."""

    async def __aenter__(self) -> Self:
        await self.start()
        return self

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        await self.aclose()


@dataclass(frozen=True, slots=True)
class ConfigChange:
    """One setting of one topic that differs from what docbus configures (``before`` ``None``: the topic
    follows the broker's default)."""

    topic: str
    name: str
    before: str | None
    after: str

    def as_dict(self) -> dict[str, str | None]:
        return {"topic": self.topic, "name": self.name, "before": self.before, "after": self.after}


class Broker(ABC):
    """A durable, partitioned, replayable log of records, with consumer groups."""

    async def start(self) -> None:
        """Connect ahead of the first call (optional: every call connects when it has to)."""

    async def aclose(self) -> None:
        """Release connections; consumers made by this broker are closed by their owners."""

    @abstractmethod
    async def ensure_topics(self, topics: Sequence[str]) -> None:
        """Create the topics that do not exist yet, with the configured partitions (idempotent)."""

    @abstractmethod
    async def publish(self, records: Sequence[OutgoingRecord]) -> list[PublishedRecord]:
        """Store ``records`` durably; one result per record, in input order.

        Raises :class:`BrokerUnavailable` when the broker does not acknowledge every record within the bound.
        """

    async def align_topic_configs(self, prefix: str, *, dry_run: bool = False) -> list[ConfigChange]:
        """Bring existing topics under ``prefix`` to the settings this broker gives the topics it creates; the
        changes made (on a dry run: that would be made). A broker without per-topic settings has none."""
        return []

    @abstractmethod
    async def ping(self) -> None:
        """Return when the broker answers; raise :class:`BrokerUnavailable` within about two seconds if not."""

    @abstractmethod
    def consumer(
        self, group: str, *, topics: Sequence[str] = (), pattern: str | None = None, patience: float = 0.0
    ) -> BrokerConsumer:
        """A consumer in ``group`` for ``topics`` and every topic whose whole name matches the regex ``pattern``.

        Topics created later that match ``pattern`` are picked up while the consumer runs. ``patience``: seconds
        the broker may hold a read to gather more records, for a consumer that is in no hurry; under load it
        then reads in fewer, larger batches. 0: records are handed over as soon as there are any.
        """

    async def __aenter__(self) -> Self:
        await self.start()
        return self

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        await self.aclose()
