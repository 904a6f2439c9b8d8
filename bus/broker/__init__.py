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
]


def broker_from_settings(settings: Settings, db: Database) -> Broker:
    """Kafka when ``settings.kafka_bootstrap`` is set; otherwise the embedded broker in ``db``."""
    publish_timeout = float(getattr(settings, "broker_publish_timeout_seconds", 10.0))
    max_poll_interval = float(getattr(settings, "broker_max_poll_interval_seconds", 300.0))
    if settings.kafka_bootstrap:
        return KafkaBroker(
            settings.kafka_bootstrap,
            partitions=int(getattr(settings, "kafka_partitions", 3)),
            replication_factor=getattr(settings, "kafka_replication_factor", None),
            client_id=str(getattr(settings, "kafka_client_id", "docbus")),
            publish_timeout=publish_timeout,
            compression=getattr(settings, "kafka_compression", DEFAULT_COMPRESSION),
            topic_refresh_interval=float(getattr(settings, "kafka_topic_refresh_seconds", 10.0)),
            max_poll_interval=max_poll_interval,
        )
    return EmbeddedBroker(
        db,
        partitions=int(getattr(settings, "embedded_broker_partitions", 1)),
        publish_timeout=publish_timeout,
        group_lease_seconds=float(getattr(settings, "embedded_group_lease_seconds", 10.0)),
        max_poll_interval=max_poll_interval,
    )
