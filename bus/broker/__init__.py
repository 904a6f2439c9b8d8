"""The broker seam: :class:`Broker` and :class:`BrokerConsumer`, on Apache Kafka or embedded in the database.

``broker_from_settings`` picks Kafka when ``DOCBUS_KAFKA_BOOTSTRAP`` is set, the embedded broker otherwise.
"""

from __future__ import annotations

from docbus.broker.base import (
    Broker,
    BrokerConsumer,
    BrokerError,
    BrokerUnavailable,
    ConsumedRecord,
    ConsumerFenced,
    OutgoingRecord,
    PublishedRecord,
    RecordRejected,
)
from docbus.broker.embedded import EmbeddedBroker
from docbus.broker.kafka import DEFAULT_COMPRESSION, KafkaBroker
from docbus.settings import Settings
from docbus.store.database import Database

__all__ = [
    "Broker",
    "BrokerConsumer",
    "BrokerError",
    "BrokerUnavailable",
    "ConsumedRecord",
    "ConsumerFenced",
    "EmbeddedBroker",
    "KafkaBroker",
    "OutgoingRecord",
    "PublishedRecord",
    "RecordRejected",
    "broker_from_settings",
    "kafka_from_settings",
]


def kafka_topic_configs(settings: Settings) -> dict[str, str]:
    """Configuration of the topics docbus creates in Kafka: the retention when one is set, else the broker's."""
    if settings.kafka_retention_hours is None:
        return {}
    return {"retention.ms": str(int(settings.kafka_retention_hours * 3_600_000))}


def broker_from_settings(settings: Settings, db: Database) -> Broker:
    """Kafka when ``settings.kafka_bootstrap`` is set; otherwise the embedded broker in ``db``."""
    if settings.kafka_bootstrap:
        return kafka_from_settings(settings, settings.kafka_bootstrap)
    return EmbeddedBroker(
        db,
        partitions=settings.embedded_broker_partitions,
        publish_timeout=settings.broker_publish_timeout_seconds,
        group_lease_seconds=settings.embedded_group_lease_seconds,
        max_poll_interval=settings.broker_max_poll_interval_seconds,
    )


def kafka_from_settings(settings: Settings, bootstrap: str) -> KafkaBroker:
    """The Kafka broker at ``bootstrap`` as configured (for commands that talk to Kafka and not the database)."""
    return KafkaBroker(
        bootstrap,
        partitions=settings.kafka_partitions,
        replication_factor=settings.kafka_replication_factor,
        client_id=settings.kafka_client_id,
        publish_timeout=settings.broker_publish_timeout_seconds,
        compression=settings.kafka_compression or DEFAULT_COMPRESSION,
        topic_refresh_interval=settings.kafka_topic_refresh_seconds,
        max_poll_interval=settings.broker_max_poll_interval_seconds,
        topic_configs=kafka_topic_configs(settings),
        security=settings.kafka_security(),
    )
