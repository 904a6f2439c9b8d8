"""What the bus knows about a message once it has been validated and accepted.

``ValidatedMessage`` is what validation extracts from a payload (kind, schema, sender, receivers, business id);
``Envelope`` adds what acceptance gives it (message id, hash, size, time, idempotency key, trace id) and is what
the store keeps and what travels in Kafka. The payload itself stays bytes and is carried beside the envelope.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from enum import StrEnum
from typing import Any


class MessageKind(StrEnum):
    """The four kinds of message the bus carries."""

    EDOC = "edoc"  # edXML document (văn bản điện tử)
    STATUS = "status"  # edXML status message: a business receipt (thông điệp trạng thái)
    DOSSIER = "dossier"  # administrative-procedure dossier record (hồ sơ TTHC, DongBoHoSoMC)
    DOSSIER_PROGRESS = "dossier-progress"  # dossier progress update (CapNhatTienDoHoSoMC)


class MessageStatus(StrEnum):
    """Where a message stands: the status its latest status-changing event gave it (the lifecycle of DESIGN §5).

    Searches take these names in any letter case, so that a typo is refused with the list instead of quietly
    matching nothing."""

    ACCEPTED = "ACCEPTED"  # validated and durable (the 202)
    PUBLISHED = "PUBLISHED"  # in its agency topic
    FORWARDING = "FORWARDING"  # an attempt to a destination started
    RETRYING = "RETRYING"  # an attempt failed; another is scheduled
    DELIVERED = "DELIVERED"  # a destination acknowledged it
    FAILED = "FAILED"  # a destination refused it for good (a permanent error, or a 02 receipt)
    DEAD = "DEAD"  # retries exhausted or refused: in the dead-letter topic
    RESENT = "RESENT"  # an operator put a dead letter back in front of its destination
    ACKNOWLEDGED = "ACKNOWLEDGED"  # receipt 01 or 03: arrived, registered
    PROCESSING = "PROCESSING"  # receipt 04 or 05: assigned, being handled
    COMPLETED = "COMPLETED"  # receipt 06: handling finished

    @classmethod
    def _missing_(cls, value: object) -> MessageStatus | None:
        if isinstance(value, str):
            return cls.__members__.get(value.upper())
        return None


@dataclass(frozen=True, slots=True)
class SchemaRef:
    """A schema in the registry: a stable id and a version."""

    id: str
    version: str


@dataclass(frozen=True, slots=True)
class ValidatedMessage:
    """The routing facts validation extracted from a payload that passed every check."""

    kind: MessageKind
    schema: SchemaRef
    sender: str
    receivers: tuple[str, ...]
    business_id: str
    # For status messages: the DocumentId of the document this receipt answers, and its 2-digit code.
    response_for: str | None = None
    status_code: str | None = None
    # Extra facts worth indexing (subject, dossier status, ...), small strings only.
    facts: dict[str, str] = field(default_factory=dict)
    # What checking an edXML packet's XML-DSig signature found (``SignatureCheck.as_dict``); None: unsigned.
    xml_signature: dict[str, Any] | None = None

    def summary(self) -> dict[str, Any]:
        """What the conformance sandbox and ``docbus check`` report about a message that passed."""
        return {
            "kind": self.kind.value,
            "schema": {"id": self.schema.id, "version": self.schema.version},
            "sender": self.sender,
            "receivers": list(self.receivers),
            "business_id": self.business_id,
            "response_for": self.response_for,
            "status_code": self.status_code,
            "xml_signature": self.xml_signature,
        }


@dataclass(frozen=True, slots=True)
class Envelope:
    """A validated message as accepted by the bus."""

    message_id: str
    kind: MessageKind
    schema: SchemaRef
    sender: str
    receivers: tuple[str, ...]
    business_id: str
    sha256: str
    size: int
    received_at: datetime
    content_type: str
    idempotency_key: str | None
    trace_id: str
    response_for: str | None = None
    status_code: str | None = None
    # Kept in the signed receipt and the ACCEPTED event, not carried in Kafka records.
    xml_signature: dict[str, Any] | None = field(default=None, compare=False)
