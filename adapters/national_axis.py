"""Adapter to the national document axis (VXP): documents and status messages out, business receipts in.

Settings (``DOCBUS_ADAPTERS__<NAME>__*``): ``url`` (the axis endpoint; operations are appended as path
segments), ``system_id`` and ``secret`` (our registration at the axis; the secret signs every call),
``timeout`` and ``connect_timeout`` in seconds, ``max_response_bytes`` (an answer larger than this, as sent or
decoded, is refused: 64 MiB by default), and ``ca_file``, ``cert_file``, ``key_file``, ``key_password`` for an
axis whose certificate comes from a government CA or that wants a client certificate (:mod:`docbus.adapters.tls`).

``probe`` (``docbus config check``) reaches the axis and lists what waits for our system with a signed call, so a
wrong system id or secret shows before the first delivery. ``deliver`` sends the raw edXML with ``sendEdoc``
(``messagetype=status`` for status messages, ``edoc`` otherwise), the message id as idempotency key; the axis' DocId
is the remote id. ``fetch_receipts`` lists what waits for us and fetches the status messages;
``acknowledge_receipt`` marks each ``done`` or ``fail``. The flow and the receipt bookkeeping are shared with the
provincial adapter (:mod:`docbus.adapters.axis`).
"""

from __future__ import annotations

from typing import ClassVar, Literal

# EDXML_KINDS and delivery_error stay importable from here too.
from docbus.adapters.axis import EDXML_KINDS as EDXML_KINDS
from docbus.adapters.axis import AxisAdapter, AxisSettings
from docbus.adapters.axis import delivery_error as delivery_error
from docbus.adapters.base import Outbound
from docbus.connectors.national_axis import NationalAxisClient, ReceivedEdoc, SentEdoc


class NationalAxisSettings(AxisSettings):
    """Our registration at the national axis (see the module docstring for the keys)."""


class NationalAxisAdapter(AxisAdapter[NationalAxisClient]):
    """Forwards edXML to the national axis and polls it for business receipts."""

    name: ClassVar[str] = "national_axis"
    Settings: ClassVar[type[AxisSettings]] = NationalAxisSettings
    axis: ClassVar[str] = "national"
    credential_check: ClassVar[str] = "its signed getReceivedEdocList call"
    client_type = NationalAxisClient

    async def _check_credentials(self) -> str:
        """``getReceivedEdocList``, signed like every call: it only lists what waits for our system (a document
        is taken only when fetched and marked), so the check leaves the axis as it was."""
        waiting = await self.client.get_received_edoc_list()
        return f"signed in as {self.client.system_id} ({len(waiting)} waiting for it)"

    async def _send(self, outbound: Outbound, messagetype: Literal["edoc", "status"]) -> SentEdoc:
        return await self.client.send_edoc(
            outbound.payload,
            messagetype,
            from_organ=outbound.envelope.sender,
            idempotency_key=outbound.envelope.message_id,
        )

    async def _waiting(self) -> list[ReceivedEdoc]:
        return await self.client.get_received_edoc_list()

    async def _mark(self, doc_id: str, ok: bool) -> None:
        await self.client.update_status(doc_id, "done" if ok else "fail")
