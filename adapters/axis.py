"""What the two axis adapters share: settings, the deliver / fetch / acknowledge flow and the receipt bookkeeping.

The national axis (VXP) and a provincial platform (LGSP) carry the same things for docbus — edXML documents and
status messages, the message id as idempotency key — and hand back business receipts the same way: a list of what
waits for our system, each status message fetched by its id, each marked done or failed once stored. Only the
client calls differ, so a subclass names its client type (``client_type``) and implements four hooks: ``_send``
(one packet out), ``_waiting`` (the received list), ``_mark`` (acknowledge one id) and ``_check_credentials``
(the cheapest call that proves the axis accepts our system id and secret, for ``probe``). Client failures
(:class:`~docbus.connectors.http.AxisError`) become delivery errors by :func:`delivery_error`, the same for both.

Identical receipts (same reporter, code and second) can wait at an axis under several ids. Every id a packet was
fetched under is kept under the packet's sha256 until acknowledged, so acknowledging the packet once marks them
all, and an id whose acknowledgement failed is tried again with the next acknowledgement of that packet.
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
from abc import abstractmethod
from collections.abc import Sequence
from typing import Any, ClassVar, Generic, Literal, Protocol, TypeVar

from pydantic import Field, SecretStr, field_validator

from docbus.adapters.base import (
    Adapter,
    AdapterSettings,
    DeliveryError,
    DeliveryResult,
    Outbound,
    PermanentDeliveryError,
    Reach,
    RetriableDeliveryError,
)
from docbus.adapters.tls import TlsClientSettings, probe_endpoint
from docbus.connectors.http import AxisClient, AxisError
from docbus.connectors.transport import MAX_RESPONSE_BYTES
from docbus.envelope import MessageKind

EDXML_KINDS = (MessageKind.EDOC, MessageKind.STATUS)

ClientT = TypeVar("ClientT", bound=AxisClient)


class AxisSettings(TlsClientSettings):
    """Our registration at an axis: its endpoint, our system id and secret there, how long to wait for it, and
    the TLS settings of :class:`~docbus.adapters.tls.TlsClientSettings`."""

    url: str
    system_id: str = Field(min_length=1)
    secret: SecretStr
    timeout: float = Field(30.0, gt=0)
    connect_timeout: float = Field(5.0, gt=0)
    max_response_bytes: int = Field(MAX_RESPONSE_BYTES, gt=0)  # an answer past it is refused, never held

    @field_validator("url")
    @classmethod
    def _http_url(cls, value: str) -> str:
        if not value.startswith(("http://", "https://")):
            raise ValueError("must be an http:// or https:// URL")
        return value


class Sent(Protocol):
    """An axis' answer to a submission."""

    @property
    def doc_id(self) -> str: ...

    @property
    def duplicate(self) -> bool: ...


class Waiting(Protocol):
    """One entry of an axis' received list."""

    @property
    def doc_id(self) -> str: ...

    @property
    def messagetype(self) -> str: ...


class AxisAdapter(Adapter, Generic[ClientT]):
    """Forwards edXML to an axis and polls it for business receipts; subclasses supply the client calls."""

    Settings: ClassVar[type[AxisSettings]] = AxisSettings
    axis: ClassVar[str]  # "national" or "provincial": names the axis in messages and delivery details
    credential_check: ClassVar[str]  # what ``_check_credentials`` does, as ``probe`` reports it ("its login")
    client_type: type[ClientT]  # built from the settings when no client is given

    def __init__(self, settings: AdapterSettings, *, client: ClientT | None = None) -> None:
        super().__init__(settings)
        if not isinstance(settings, self.Settings):
            raise TypeError(f"{type(self).__name__} needs {self.Settings.__name__}")
        self.client = client or self.client_type(
            settings.url,
            settings.system_id,
            settings.secret.get_secret_value(),
            timeout=settings.timeout,
            connect_timeout=settings.connect_timeout,
            max_response_bytes=settings.max_response_bytes,
            ssl_context=settings.ssl_context(),
        )
        self._pending: dict[str, list[str]] = {}  # sha256 of a fetched receipt -> DocIds to acknowledge
        self._closed = False

    @abstractmethod
    async def _send(self, outbound: Outbound, messagetype: Literal["edoc", "status"]) -> Sent:
        """Submit ``outbound.payload`` as ``messagetype``, ``outbound.envelope.message_id`` as idempotency key."""

    @abstractmethod
    async def _waiting(self) -> Sequence[Waiting]:
        """What waits for our system at the axis: documents and status messages."""

    @abstractmethod
    async def _mark(self, doc_id: str, ok: bool) -> None:
        """Acknowledge one received item as taken (``ok``) or refused."""

    @abstractmethod
    async def _check_credentials(self) -> str:
        """Make one call that only succeeds with our system id and secret and changes nothing at the axis; return
        what it showed, for the probe's report."""

    async def deliver(self, outbound: Outbound) -> DeliveryResult:
        envelope = outbound.envelope
        if envelope.kind not in EDXML_KINDS:
            raise PermanentDeliveryError(f"the {self.axis} axis carries edXML only, not {envelope.kind.value}")
        try:
            sent = await self._send(outbound, "status" if envelope.kind is MessageKind.STATUS else "edoc")
        except AxisError as exc:
            raise delivery_error(exc) from exc
        return DeliveryResult(remote_id=sent.doc_id, duplicate=sent.duplicate, detail={"axis": self.axis})

    async def probe(self, timeout: float) -> Reach:
        """Reaches the axis as a delivery would, then makes one signed call that changes nothing there: wrong
        credentials (ErrorCode 15) would refuse every delivery, so they fail the check; an axis that errors or
        does not answer that call is reported as not reached, never as a refusal."""
        settings = self.settings
        assert isinstance(settings, AxisSettings)
        reach = await probe_endpoint(settings.url, settings.ssl_context(), timeout)
        if not reach.reached:
            return reach
        try:
            async with asyncio.timeout(timeout):
                shown = await self._check_credentials()
        except TimeoutError:
            return Reach(False, f"{reach.detail}; {self.credential_check} did not answer within {timeout:g} s")
        except AxisError as exc:
            if exc.retriable:
                return Reach(False, f"{reach.detail}; {self.credential_check} failed: {exc.reason}")
            return Reach(True, f"{reach.detail}; it refused docbus' SYSTEM_ID and SECRET: {exc.reason}", refused=True)
        return Reach(True, f"{reach.detail}; {shown}")

    async def fetch_receipts(self) -> list[bytes]:
        try:
            waiting = await self._waiting()
            packets = []
            for item in waiting:
                if item.messagetype != "status":
                    continue  # documents addressed to docbus' agencies are not receipts
                packet = await self.client.get_edoc(item.doc_id)
                doc_ids = self._pending.setdefault(hashlib.sha256(packet).hexdigest(), [])
                if item.doc_id not in doc_ids:
                    doc_ids.append(item.doc_id)
                packets.append(packet)
        except AxisError as exc:
            raise delivery_error(exc) from exc
        return packets

    async def acknowledge_receipt(self, packet: bytes, ok: bool) -> None:
        digest = hashlib.sha256(packet).hexdigest()
        doc_ids = self._pending.get(digest)
        if not doc_ids:
            # Identical packets (same reporter, code and second) are acknowledged together with the first one.
            logging.getLogger(type(self).__module__).debug(
                "acknowledging a receipt the %s axis no longer waits for (sha256 %s)", self.axis, digest
            )
            return
        try:
            while doc_ids:
                await self._mark(doc_ids[0], ok)
                doc_ids.pop(0)
        except AxisError as exc:
            raise delivery_error(exc) from exc
        finally:
            if not doc_ids:
                self._pending.pop(digest, None)

    async def aclose(self) -> None:
        if not self._closed:
            self._closed = True
            await self.client.aclose()


def delivery_error(exc: AxisError[Any]) -> DeliveryError:
    """The delivery error a client failure means: retriable or permanent, with the axis' code and words."""
    kind = RetriableDeliveryError if exc.retriable else PermanentDeliveryError
    return kind(
        str(exc),
        status_code=exc.http_status,
        response_excerpt=exc.excerpt,
        remote_code=None if exc.error_code is None else str(exc.error_code),
    )
