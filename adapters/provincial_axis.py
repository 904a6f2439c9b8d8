"""Adapter to a provincial integration platform (LGSP): documents and status messages out, receipts in.

Settings (``DOCBUS_ADAPTERS__<NAME>__*``): ``url`` (the platform's REST base), ``system_id`` and ``secret``
(traded for a bearer token at ``login``, renewed before it expires), ``timeout`` and ``connect_timeout``.

``deliver`` uploads the raw edXML as ``edocFile`` with ``sendEdoc``, the message id as idempotency key; the
platform's document id is the remote id. ``fetch_receipts`` syncs the received list and fetches the status
messages; ``acknowledge_receipt`` marks each ``DONE`` or ``FAIL``.
"""

from __future__ import annotations

import hashlib
import logging
from typing import ClassVar

from pydantic import Field, SecretStr, field_validator

from docbus.adapters.base import (
    Adapter,
    AdapterSettings,
    DeliveryError,
    DeliveryResult,
    Outbound,
    PermanentDeliveryError,
    RetriableDeliveryError,
)
from docbus.connectors.provincial_axis import ProvincialAxisClient, ProvincialAxisError
from docbus.envelope import MessageKind

log = logging.getLogger(__name__)

EDXML_KINDS = (MessageKind.EDOC, MessageKind.STATUS)


class ProvincialAxisSettings(AdapterSettings):
    url: str
    system_id: str = Field(min_length=1)
    secret: SecretStr
    timeout: float = Field(30.0, gt=0)
    connect_timeout: float = Field(5.0, gt=0)

    @field_validator("url")
    @classmethod
    def _http_url(cls, value: str) -> str:
        if not value.startswith(("http://", "https://")):
            raise ValueError("must be an http:// or https:// URL")
        return value


class ProvincialAxisAdapter(Adapter):
    """Forwards edXML to a provincial platform and polls it for business receipts."""

    name: ClassVar[str] = "provincial_axis"
    Settings: ClassVar[type[AdapterSettings]] = ProvincialAxisSettings

    def __init__(self, settings: AdapterSettings, *, client: ProvincialAxisClient | None = None) -> None:
        super().__init__(settings)
        if not isinstance(settings, ProvincialAxisSettings):
            raise TypeError(f"{type(self).__name__} needs {ProvincialAxisSettings.__name__}")
        self.client = client or ProvincialAxisClient(
            settings.url,
            settings.system_id,
            settings.secret.get_secret_value(),
            timeout=settings.timeout,
            connect_timeout=settings.connect_timeout,
        )
        self._pending: dict[str, list[str]] = {}  # sha256 of a fetched receipt -> DocIds to acknowledge
        self._closed = False

    async def deliver(self, outbound: Outbound) -> DeliveryResult:
        envelope = outbound.envelope
        if envelope.kind not in EDXML_KINDS:
            raise PermanentDeliveryError(f"the provincial axis carries edXML only, not {envelope.kind.value}")
        try:
            sent = await self.client.send_edoc(
                outbound.payload,
                "status" if envelope.kind is MessageKind.STATUS else "edoc",
                idempotency_key=envelope.message_id,
                filename=f"{envelope.message_id}.edxml",
            )
        except ProvincialAxisError as exc:
            raise delivery_error(exc) from exc
        return DeliveryResult(remote_id=sent.doc_id, duplicate=sent.duplicate, detail={"axis": "provincial"})

    async def fetch_receipts(self) -> list[bytes]:
        try:
            waiting = await self.client.sync_received_edoc_list()
            packets = []
            for item in waiting:
                if item.messagetype != "status":
                    continue  # documents addressed to docbus' agencies are not receipts
                packet = await self.client.get_edoc(item.doc_id)
                doc_ids = self._pending.setdefault(hashlib.sha256(packet).hexdigest(), [])
                if item.doc_id not in doc_ids:
                    doc_ids.append(item.doc_id)
                packets.append(packet)
        except ProvincialAxisError as exc:
            raise delivery_error(exc) from exc
        return packets

    async def acknowledge_receipt(self, packet: bytes, ok: bool) -> None:
        digest = hashlib.sha256(packet).hexdigest()
        doc_ids = self._pending.get(digest)
        if not doc_ids:
            # Identical packets (same reporter, code and second) are acknowledged together with the first one.
            log.debug("acknowledging a receipt the provincial axis no longer waits for (sha256 %s)", digest)
            return
        try:
            while doc_ids:
                await self.client.update_status(doc_ids[0], "DONE" if ok else "FAIL")
                doc_ids.pop(0)
        except ProvincialAxisError as exc:
            raise delivery_error(exc) from exc
        finally:
            if not doc_ids:
                self._pending.pop(digest, None)

    async def aclose(self) -> None:
        if not self._closed:
            self._closed = True
            await self.client.aclose()


def delivery_error(exc: ProvincialAxisError) -> DeliveryError:
    """The delivery error a client failure means: retriable or permanent, with the platform's code and words."""
    kind = RetriableDeliveryError if exc.retriable else PermanentDeliveryError
    return kind(
        str(exc),
        status_code=exc.http_status,
        response_excerpt=exc.excerpt,
        remote_code=None if exc.error_code is None else str(exc.error_code),
    )
