"""Existing Kafka topics brought in line with the configuration docbus gives the topics it creates.

docbus sets ``retention.ms`` (``DOCBUS_KAFKA_RETENTION_HOURS``) when it creates a topic. A topic created before
the setting changed would otherwise keep the old value for ever, and an operator who shortened retention to meet
a records policy would find the old topics still holding a week of documents. :func:`align_topic_configs` reads
each topic's own settings (DescribeConfigs) and changes those that differ (AlterConfigs).

aiokafka speaks only the original AlterConfigs, which *replaces* a topic's whole set of dynamic settings: so
every setting the topic has of its own (an operator's ``max.message.bytes``, say) is sent back unchanged with the
new value. An operator changing one of them with Kafka's tools in the same instant could see that change
undone; the next run puts docbus' own settings right again in any case. A topic with a sensitive setting (whose
value Kafka never shows) is left alone, since its value could not be sent back.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from aiokafka.admin import AIOKafkaAdminClient
from aiokafka.admin.config_resource import ConfigResource, ConfigResourceType
from aiokafka.errors import for_code

from docbus.broker.base import BrokerError, ConfigChange
from docbus.broker.kafka_errors import translate

log = logging.getLogger(__name__)

DYNAMIC_TOPIC_CONFIG = 1  # DescribeConfigs' config_source: set on the topic itself
DESCRIBE_BATCH = 100  # topics per DescribeConfigs request


@dataclass(frozen=True, slots=True)
class TopicSettings:
    """A topic's own (dynamic) settings, and whether one of them is sensitive (its value hidden)."""

    own: dict[str, str]
    hidden: bool


async def align_topic_configs(
    admin: AIOKafkaAdminClient, topics: Sequence[str], wanted: Mapping[str, str], *, dry_run: bool = False
) -> list[ConfigChange]:
    """Change every setting in ``wanted`` that differs on one of ``topics``; the changes made (or, on a dry run,
    that would be made), in topic order. A topic deleted meanwhile is skipped."""
    if not wanted or not topics:
        return []
    changes: list[ConfigChange] = []
    for start in range(0, len(topics), DESCRIBE_BATCH):
        current = await _describe(admin, topics[start : start + DESCRIBE_BATCH])
        for topic, settings in current.items():
            differing = [
                ConfigChange(topic, name, settings.own.get(name), value)
                for name, value in sorted(wanted.items())
                if settings.own.get(name) != value
            ]
            if not differing:
                continue
            if settings.hidden:
                log.warning("topic %s has a sensitive setting of its own; its settings are left as they are", topic)
                continue
            if not dry_run:
                await _alter(admin, topic, {**settings.own, **wanted})
            changes += differing
    return changes


async def _describe(admin: AIOKafkaAdminClient, topics: Sequence[str]) -> dict[str, TopicSettings]:
    resources = [ConfigResource(ConfigResourceType.TOPIC, topic) for topic in topics]
    found: dict[str, TopicSettings] = {}
    for response in await admin.describe_configs(resources):
        if response.API_VERSION < 1:
            raise BrokerError("Kafka answered DescribeConfigs v0, which does not say where a setting comes from")
        for error_code, _message, _type, name, entries in response.resources:
            if error_code == 3:  # UNKNOWN_TOPIC_OR_PARTITION: deleted since it was listed
                continue
            if error_code:
                raise translate(f"reading the settings of topic {name}", for_code(error_code)())
            own = {e[0]: e[1] for e in entries if e[3] == DYNAMIC_TOPIC_CONFIG and e[1] is not None}
            hidden = any(e[3] == DYNAMIC_TOPIC_CONFIG and e[4] for e in entries)
            found[name] = TopicSettings(own, hidden)
    return dict(sorted(found.items()))


async def _alter(admin: AIOKafkaAdminClient, topic: str, settings: dict[str, str]) -> None:
    responses = await admin.alter_configs([ConfigResource(ConfigResourceType.TOPIC, topic, configs=settings)])
    for response in responses:
        for error_code, _message, _type, name in response.resources:
            if error_code:
                raise translate(f"changing the settings of topic {name}", for_code(error_code)())
