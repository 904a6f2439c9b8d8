"""Intake: from an authenticated agency's bytes to a durable message and its signed receipt.

The order of checks is the order of cost, so hostile input is turned away before it costs much:
validate (XML safety, schema, semantics) → identity (the sender is the caller) → idempotency key shape →
envelope and signed receipt → group-committed write. Nothing is stored unless every check passes.
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
import re
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime
from typing import Any

from docbus.envelope import Envelope, MessageKind, ValidatedMessage
from docbus.errors import (
    FieldError,
    Forbidden,
    IdempotencyConflict,
    NotWellFormed,
    StoreUnavailable,
    ValidationFailed,
)
from docbus.ids import new_message_id, new_trace_id
from docbus.metrics import PAYLOAD_WRITE_FAILURES
from docbus.payload_store import PayloadStore
from docbus.routing import RouteTable
from docbus.signing import canonical_json
from docbus.signing_keys import SigningKeys
from docbus.store.agencies import Agency, Role
from docbus.store.intake_writer import IntakeOutcome, IntakeWriter, Submission
from docbus.store.write_failures import RETRY_AFTER_FULL, RETRY_AFTER_OTHER, FailureStreak, WriteFailure
from docbus.topics import Topics
from docbus.validation import MessageValidator

log = logging.getLogger(__name__)

IDEMPOTENCY_KEY = re.compile(r"^[\x21-\x7e]{1,255}$")
TRACEPARENT = re.compile(r"^[0-9a-f]{2}-([0-9a-f]{32})-[0-9a-f]{16}-[0-9a-f]{2}$")
# Bodies above this are validated on a worker thread (lxml releases the GIL) so one big packet cannot stall
# every other request on the event loop.
OFFLOAD_BYTES = 256 * 1024


OriginalLookup = Callable[[ValidatedMessage], Awaitable[bool]]


class IntakeService:
    """Validates, identifies, signs and durably stores submissions."""

    def __init__(
        self,
        validator: MessageValidator,
        signing_keys: SigningKeys,
        writer: IntakeWriter,
        payload_store: PayloadStore,
        *,
        claim_check_bytes: int,
        routes: RouteTable | None = None,
        local_agencies: Callable[[], frozenset[str]] = frozenset,
        originals: OriginalLookup | None = None,
        topics: Topics | None = None,
    ) -> None:
        self._topics = topics or Topics()
        self._routes = routes or RouteTable()
        self._local_agencies = local_agencies
        self._originals = originals
        self._validator = validator
        self._signing_keys = signing_keys
        self._writer = writer
        self._payload_store = payload_store
        self._claim_check_bytes = claim_check_bytes
        self._payload_failures = FailureStreak("payload store", log, unit="writes")

    async def validate(self, body: bytes, content_type: str) -> ValidatedMessage:
        if len(body) > OFFLOAD_BYTES:
            return await asyncio.to_thread(self._validator.validate, body, content_type)
        return self._validator.validate(body, content_type)

    @staticmethod
    def check_sender(caller: Agency, message: ValidatedMessage) -> None:
        """An agency speaks only for itself; an axis only relays receipts; operators do not submit."""
        if caller.role is Role.AGENCY and message.sender != caller.organ_id:
            raise Forbidden(f"the message is sent by {message.sender} but the credential belongs to {caller.organ_id}")
        if caller.role is Role.AXIS and message.kind is not MessageKind.STATUS:
            raise Forbidden("an axis credential may only post status messages (receipts)")
        if caller.role is Role.OPERATOR:
            raise Forbidden("operator credentials cannot submit messages; use the sending agency's key")

    def check_routes(self, message: ValidatedMessage) -> None:
        """With routing configured, a receiver that no destination serves would never get the message: 422."""
        if not self._routes.enabled:
            return
        _, uncovered = self._routes.plan(message.receivers, self._local_agencies())
        if uncovered:
            raise ValidationFailed(
                "no route serves these receivers: " + ", ".join(uncovered),
                errors=[
                    FieldError(
                        path="receivers",
                        rule="no-route",
                        message_en=f"no destination is configured for receiver {r}",
                        message_vi=f"Chưa có tuyến chuyển tiếp nào cho đơn vị nhận {r}",
                        expected="a receiver covered by the bus' routes",
                    )
                    for r in uncovered
                ],
            )

    async def check_axis_receipt(self, caller: Agency, message: ValidatedMessage) -> None:
        """An axis may post receipts only for documents that were sent to the receipt's sender."""
        if caller.role is not Role.AXIS or self._originals is None:
            return
        if not await self._originals(message):
            raise Forbidden(
                f"no document {message.response_for!r} from {message.receivers[0] if message.receivers else '?'} "
                f"was sent to {message.sender}; an axis may post receipts only for documents sent through it"
            )

    async def accept(
        self,
        caller: Agency | None,
        body: bytes,
        content_type: str,
        *,
        idempotency_key: str | None = None,
        traceparent: str | None = None,
    ) -> IntakeOutcome:
        if idempotency_key is not None and not IDEMPOTENCY_KEY.match(idempotency_key):
            raise NotWellFormed("Idempotency-Key must be 1 to 255 visible ASCII characters")
        message = await self.validate(body, content_type)
        if caller is not None:  # None: a receipt an adapter fetched from an axis it is configured for
            self.check_sender(caller, message)
            await self.check_axis_receipt(caller, message)
        self.check_routes(message)
        sha256 = hashlib.sha256(body).hexdigest()
        trace = TRACEPARENT.match(traceparent or "")
        envelope = Envelope(
            message_id=new_message_id(),
            kind=message.kind,
            schema=message.schema,
            sender=message.sender,
            receivers=message.receivers,
            business_id=message.business_id,
            sha256=sha256,
            size=len(body),
            received_at=datetime.now(UTC),
            content_type=content_type.split(";", 1)[0].strip().lower(),
            idempotency_key=idempotency_key,
            trace_id=trace.group(1) if trace else new_trace_id(),
            response_for=message.response_for,
            status_code=message.status_code,
            xml_signature=message.xml_signature,
        )
        payload_ref = None
        if envelope.size > self._claim_check_bytes:
            # Durable before the database commit, so the 202 that follows still means "nothing can be lost".
            payload_ref = await self._put_payload(envelope.message_id, body)
        submission = Submission(
            envelope=envelope,
            payload=body,
            dedup_key=dedup_key(envelope),
            receipt=self.receipt(envelope),
            topic=self._topics.agency(envelope.sender),
            payload_ref=payload_ref,
        )
        if payload_ref is None:
            return await self._writer.submit(submission)
        try:
            outcome = await self._writer.submit(submission)
        except (IdempotencyConflict, StoreUnavailable) as exc:
            if isinstance(exc, IdempotencyConflict) or exc.nothing_stored:
                await self._forget_payload(payload_ref)
            raise
        if outcome.replayed:  # the stored message keeps its own copy; this one belongs to nothing
            await self._forget_payload(payload_ref)
        return outcome

    @property
    def payload_failure(self) -> WriteFailure | None:
        """The unbroken run of failed payload-store writes going on now (``/readyz``), or ``None``."""
        return self._payload_failures.current

    async def _put_payload(self, message_id: str, body: bytes) -> str:
        try:
            ref = await self._payload_store.put(message_id, body)
        except OSError as exc:
            failure = self._payload_failures.failed(exc, message_id)
            PAYLOAD_WRITE_FAILURES.labels(reason="full" if failure.full else "error").inc()
            raise StoreUnavailable(
                f"{failure.reason}: the message was not stored; retry later",
                retry_after=RETRY_AFTER_FULL if failure.full else RETRY_AFTER_OTHER,
                nothing_stored=True,
            ) from exc
        self._payload_failures.succeeded()
        return ref

    async def _forget_payload(self, ref: str) -> None:
        """Removes a claim-checked payload no stored message refers to (a replay's, a refused submission's): each
        retry of a 50 MB packet would otherwise leave 50 MB behind for good."""
        try:
            await self._payload_store.delete(ref)
        except Exception:
            log.exception("could not remove the unreferenced payload %s", ref)

    def receipt(self, envelope: Envelope) -> bytes:
        """The acceptance receipt: the envelope's facts plus an Ed25519 JWS over exactly those facts."""
        fields: dict[str, Any] = {
            "message_id": envelope.message_id,
            "kind": envelope.kind.value,
            "schema": {"id": envelope.schema.id, "version": envelope.schema.version},
            "sender": envelope.sender,
            "receivers": list(envelope.receivers),
            "business_id": envelope.business_id,
            "sha256": envelope.sha256,
            "size": envelope.size,
            "received_at": envelope.received_at.isoformat(),
        }
        if envelope.xml_signature is not None:
            # The bus attests what it found when it checked the packet's own signature.
            fields["xml_signature"] = envelope.xml_signature
        signed = canonical_json(fields)
        return canonical_json({**fields, "signature": self._signing_keys.signer().sign(signed)})


def dedup_key(envelope: Envelope) -> str:
    """What makes two POSTs the same submission: the agency's key if it sent one, else business id + content."""
    if envelope.idempotency_key is not None:
        return "key:" + envelope.idempotency_key
    digest = hashlib.sha256(f"{envelope.business_id}\n{envelope.sha256}".encode()).hexdigest()
    return "content:" + digest
