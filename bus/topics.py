"""Names in the broker: topics and consumer groups, all under one prefix (``DOCBUS_TOPIC_PREFIX``, default
``docbus``) so that several buses — production and staging, or parallel test runs — can share one Kafka cluster."""

from __future__ import annotations

import re
from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class Topics:
    prefix: str = "docbus"

    def agency(self, organ_id: str) -> str:
        """Where one sending agency's messages go (key = business id, so a document's messages stay in order)."""
        return f"{self.prefix}.agency.{organ_id}"

    @property
    def agency_pattern(self) -> str:
        """Regex for every agency topic, including agencies registered later."""
        return re.escape(f"{self.prefix}.agency.") + ".*"

    def dlq(self, destination: str) -> str:
        return f"{self.prefix}.dlq.{destination}"

    def resend(self, destination: str) -> str:
        return f"{self.prefix}.resend.{destination}"

    def deliver_group(self, destination: str) -> str:
        return f"{self.prefix}.deliver.{destination}"

    @property
    def status(self) -> str:
        """Every lifecycle event of every message (key = message id), for anything that watches the bus."""
        return f"{self.prefix}.status"

    @property
    def receipts_group(self) -> str:
        return f"{self.prefix}.receipts"
