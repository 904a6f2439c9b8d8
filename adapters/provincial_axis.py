"""Adapter to a provincial integration platform (LGSP): documents and status messages out, receipts in.

Settings (``DOCBUS_ADAPTERS__<NAME>__*``): ``url`` (the platform's REST base), ``system_id`` and ``secret``
(traded for a bearer token at ``login``, renewed before it expires), ``timeout``, ``connect_timeout`` and
``max_response_bytes`` (an answer larger than this, as sent or decoded, is refused: 64 MiB by default), and
``ca_file``, ``cert_file``, ``key_file``, ``key_password`` for a platform whose certificate comes from a
government CA or that wants a client certificate (:mod:`docbus.adapters.tls`).

``probe`` (``docbus config check``) reaches the platform and logs in, so wrong credentials show before the first
delivery. ``deliver`` uploads the raw edXML as ``edocFile`` with ``sendEdoc``, the message id as idempotency key; the
platform's document id is the remote id. ``fetch_receipts`` syncs the received list and fetches the status
messages; ``acknowledge_receipt`` marks each ``DONE`` or ``FAIL``. The flow and the receipt bookkeeping are shared
with the national adapter (:mod:`docbus.adapters.axis`).
"""

from __future__ import annotations

from typing import ClassVar, Literal

# EDXML_KINDS and delivery_error stay importable from here too.
from docbus.adapters.axis import EDXML_KINDS as EDXML_KINDS
from docbus.adapters.axis import AxisAdapter, AxisSettings
from docbus.adapters.axis import delivery_error as delivery_error
from docbus.adapters.base import Outbound
from docbus.connectors.provincial_axis import ProvincialAxisClient, ReceivedEdoc, SentEdoc


class ProvincialAxisSettings(AxisSettings):
    """Our registration at a provincial platform (see the module docstring for the keys)."""


class ProvincialAxisAdapter(AxisAdapter[ProvincialAxisClient]):
    """Forwards edXML to a provincial platform and polls it for business receipts."""

    name: ClassVar[str] = "provincial_axis"
    Settings: ClassVar[type[AxisSettings]] = ProvincialAxisSettings
    axis: ClassVar[str] = "provincial"
    credential_check: ClassVar[str] = "its login"
    client_type = ProvincialAxisClient

    async def _check_credentials(self) -> str:
        """A login: it trades the system id and secret for a token and touches no document."""
        await self.client.login()
        return f"logged in as {self.client.system_id}"

    async def _send(self, outbound: Outbound, messagetype: Literal["edoc", "status"]) -> SentEdoc:
        return await self.client.send_edoc(
            outbound.payload,
            messagetype,
            idempotency_key=outbound.envelope.message_id,
            filename=f"{outbound.envelope.message_id}.edxml",
        )

    async def _waiting(self) -> list[ReceivedEdoc]:
        return await self.client.sync_received_edoc_list()

    async def _mark(self, doc_id: str, ok: bool) -> None:
        await self.client.update_status(doc_id, "DONE" if ok else "FAIL")
