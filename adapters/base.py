"""The adapter seam: how docbus hands a message to an outside system.

An adapter is a class with one abstract method, ``deliver``, and no-op lifecycle hooks. Adapters are found through
the entry-point group ``docbus.adapters`` (name → class); each gets its own settings, validated by its
``Settings`` model from ``DOCBUS_ADAPTERS__<NAME>__*``, and its own consumer group, so a slow or failing
destination never holds up another.

Errors say what to do next on the class: ``retriable = True`` means "try again later" (timeouts, 5xx, the axis
is down); ``retriable = False`` means "this will never work" (refused, malformed, unknown recipient) and the
message goes to the dead letters at once::

    DeliveryError                 Raised when a delivery did not succeed.
    ├── RetriableDeliveryError    Raised when the destination may accept it later.
    └── PermanentDeliveryError    Raised when the destination refused it for good.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from dataclasses import dataclass, field
from typing import Any, ClassVar

from pydantic import BaseModel, ConfigDict

from docbus.envelope import Envelope
from docbus.errors import DocbusError


class AdapterSettings(BaseModel):
    """Base of every adapter's settings model; unknown keys are errors so typos do not pass silently, and a
    validation error never echoes the values given (secrets and key passwords among them)."""

    model_config = ConfigDict(extra="forbid", frozen=True, hide_input_in_errors=True)


@dataclass(frozen=True, slots=True)
class Outbound:
    """One message on its way to one destination."""

    envelope: Envelope
    payload: bytes
    destination: str  # route / adapter instance name
    receivers: tuple[str, ...]  # the message's receivers this destination serves
    attempt: int = 1


@dataclass(frozen=True, slots=True)
class DeliveryResult:
    """What the destination said when it took the message."""

    remote_id: str | None = None  # e.g. the national axis' DocId
    duplicate: bool = False  # the destination already had it (idempotency key honoured)
    detail: dict[str, Any] = field(default_factory=dict)


@dataclass(eq=False)
class DeliveryError(DocbusError):
    """Raised when a delivery did not succeed; ``retriable`` says whether trying again can help."""

    reason: str
    status_code: int | None = None
    response_excerpt: str | None = None
    remote_code: str | None = None

    retriable: ClassVar[bool] = True

    def __post_init__(self) -> None:
        super().__init__(self.reason)

    def as_dict(self) -> dict[str, Any]:
        return {
            "reason": self.reason,
            "retriable": self.retriable,
            "status_code": self.status_code,
            "remote_code": self.remote_code,
            "response_excerpt": self.response_excerpt,
        }


class RetriableDeliveryError(DeliveryError):
    """Raised when the destination may accept the message later (timeout, 5xx, down, rate-limited)."""

    retriable = True


class PermanentDeliveryError(DeliveryError):
    """Raised when the destination refused the message for good (bad format, unknown recipient, forbidden)."""

    retriable = False


@dataclass(frozen=True, slots=True)
class Reach:
    """What a probe of a destination found (``Adapter.probe``): ``reached`` it (and checked it, for TLS);
    ``refused`` by a check that will fail every delivery until the settings or the certificates change (not a
    destination that is merely down; an axis can be reached and still refuse docbus' credentials); ``detail`` in
    words. ``docbus config check`` fails a refusal, warns when not reached."""

    reached: bool
    detail: str
    refused: bool = False


class Adapter(ABC):
    """Base class of outbound adapters. Subclasses set ``name`` and ``Settings`` and implement ``deliver``."""

    name: ClassVar[str]
    Settings: ClassVar[type[AdapterSettings]] = AdapterSettings

    def __init__(self, settings: AdapterSettings) -> None:
        self.settings = settings

    @classmethod
    def from_config(cls, config: dict[str, Any]) -> Adapter:
        """Build from the raw ``DOCBUS_ADAPTERS__<NAME>__*`` values (keys case-insensitive)."""
        return cls(cls.Settings.model_validate({k.lower(): v for k, v in config.items()}))

    async def start(self) -> None:
        """Open connections, log in; called once before the first delivery."""

    async def probe(self, timeout: float) -> Reach | None:
        """Whether the destination can be reached, without delivering or changing anything there, for ``docbus
        config check``; ``None`` when this adapter cannot tell without doing so."""
        return None

    @abstractmethod
    async def deliver(self, outbound: Outbound) -> DeliveryResult:
        """Hand the message to the destination; raise a ``DeliveryError`` subclass when it did not take it.

        ``outbound.envelope.message_id`` is the idempotency key: a destination that honours it must not
        store the message twice when it is delivered again.
        """

    async def fetch_receipts(self) -> list[bytes]:
        """Business receipts (edXML status messages, raw) waiting at the destination for docbus' senders.

        Polled by the worker; each returned packet is acknowledged with ``acknowledge_receipt`` once stored.
        """
        return []

    async def acknowledge_receipt(self, packet: bytes, ok: bool) -> None:
        """Tell the destination a fetched receipt was taken (``ok``) or refused."""

    async def aclose(self) -> None:
        """Release connections."""
