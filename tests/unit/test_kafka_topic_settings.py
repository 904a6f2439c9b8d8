"""Aligning topic settings, against a stand-in admin client: the cases a live broker rarely shows (a topic
deleted between listing and reading, a sensitive setting, a refusal)."""

from __future__ import annotations

from typing import Any

import pytest

from docbus.broker.base import BrokerError, ConfigChange
from docbus.broker.kafka_topic_configs import align_topic_configs


class Response:
    API_VERSION = 2

    def __init__(self, resources: list[tuple[Any, ...]]) -> None:
        self.resources = resources


class Admin:
    """Answers DescribeConfigs from ``topics`` (name -> entries, or an error code) and records AlterConfigs."""

    def __init__(self, topics: dict[str, list[tuple[Any, ...]] | int], alter_error: int = 0) -> None:
        self.topics = topics
        self.alter_error = alter_error
        self.altered: list[tuple[str, dict[str, str]]] = []

    async def describe_configs(self, resources: list[Any]) -> list[Response]:
        answer = []
        for resource in resources:
            found = self.topics[resource.name]
            error = found if isinstance(found, int) else 0
            entries = [] if isinstance(found, int) else found
            answer.append((error, "", 2, resource.name, entries))
        return [Response(answer)]

    async def alter_configs(self, resources: list[Any]) -> list[Response]:
        self.altered += [(r.name, dict(r.configs)) for r in resources]
        return [Response([(self.alter_error, "", 2, r.name) for r in resources])]


def entry(name: str, value: str | None, source: int, sensitive: bool = False) -> tuple[Any, ...]:
    return (name, value, False, source, sensitive, [])


async def test_deleted_and_sensitive_topics_are_skipped_and_the_rest_keeps_its_own_settings() -> None:
    admin = Admin(
        {
            "b.gone": 3,  # UNKNOWN_TOPIC_OR_PARTITION: deleted since it was listed
            "b.secret": [entry("retention.ms", "5", 1), entry("some.password", None, 1, sensitive=True)],
            "b.tuned": [entry("retention.ms", "5", 1), entry("segment.ms", "9", 1), entry("cleanup.policy", "x", 5)],
            "b.fine": [entry("retention.ms", "7", 1)],
        }
    )
    changes = await align_topic_configs(admin, ["b.gone", "b.secret", "b.tuned", "b.fine"], {"retention.ms": "7"})  # type: ignore[arg-type]
    assert changes == [ConfigChange("b.tuned", "retention.ms", "5", "7")]
    assert admin.altered == [("b.tuned", {"retention.ms": "7", "segment.ms": "9"})]  # defaults are not pinned


async def test_a_refusal_is_a_broker_error() -> None:
    admin = Admin({"b.t": 29}, alter_error=0)  # TOPIC_AUTHORIZATION_FAILED on reading
    with pytest.raises(BrokerError, match=r"reading the settings of topic b\.t"):
        await align_topic_configs(admin, ["b.t"], {"retention.ms": "7"})  # type: ignore[arg-type]
    admin = Admin({"b.t": [entry("retention.ms", "5", 1)]}, alter_error=29)
    with pytest.raises(BrokerError, match=r"changing the settings of topic b\.t"):
        await align_topic_configs(admin, ["b.t"], {"retention.ms": "7"})  # type: ignore[arg-type]
