"""Business receipts: edXML status messages (01–16) matched to the document they answer.

A status message reaches the bus like any other message (POSTed by an agency or an axis, or fetched from an axis
by its adapter) and is published to its sender's topic. This consumer (group ``docbus.receipts``) reads them,
finds the original — the message whose business id is the receipt's ResponseFor/DocumentId, sent by the
receipt's addressee and addressed to the receipt's sender — and appends a RECEIPT event to the original's
timeline. The original's sender sees it at ``GET /v1/messages/{id}``, on ``GET /v1/events``, and on its webhook
when its routes give it one (the status message itself is routed to it like any message).
"""

from __future__ import annotations

import asyncio
import logging
from dataclasses import dataclass
from typing import Any

from lxml import etree
from sqlalchemy import select

from docbus.broker.base import Broker, ConsumedRecord
from docbus.delivery.consuming import consume_until
from docbus.delivery.recorder import EventRecorder, EventsNotStored
from docbus.envelope import Envelope, MessageKind, MessageStatus
from docbus.metrics import RECEIPTS
from docbus.payload_store import PayloadStore
from docbus.records import NotADocbusRecord, envelope_from_record
from docbus.store.database import Database
from docbus.store.messages import NewEvent
from docbus.store.tables import events, messages
from docbus.topics import Topics

log = logging.getLogger(__name__)

EDXML_NS = "http://www.mic.gov.vn/TBT/QCVN_102_2016"
# This consumer reads every record of the agency topics (documents too) to find the status messages among them,
# and a receipt is not urgent to the second: Kafka may hold its reads this long to hand over more at once.
FETCH_PATIENCE = 0.25

# What each status code means, and the status it gives the original message (None: timeline only).
STATUS_CODES: dict[str, tuple[str, MessageStatus | None]] = {
    "01": ("arrived at the recipient (đã đến)", MessageStatus.ACKNOWLEDGED),
    "02": ("refused by the recipient (từ chối tiếp nhận)", MessageStatus.FAILED),
    "03": ("accepted and registered (đã tiếp nhận)", MessageStatus.ACKNOWLEDGED),
    "04": ("assigned for handling (phân công)", MessageStatus.PROCESSING),
    "05": ("being handled (đang xử lý)", MessageStatus.PROCESSING),
    "06": ("handling finished (hoàn thành)", MessageStatus.COMPLETED),
    "13": ("sender asks for the document back (yêu cầu lấy lại)", None),
    "14": ("recipient agrees to recall or update (đồng ý lấy lại / cập nhật)", None),
    "15": ("recipient agrees to recall or update (đồng ý lấy lại / cập nhật)", None),
    "16": ("recipient refuses to recall or update (từ chối lấy lại / cập nhật)", None),
}

_PARSER = etree.XMLParser(resolve_entities=False, no_network=True, load_dtd=False, huge_tree=False)


@dataclass(frozen=True, slots=True)
class MatchedReceipt:
    original_id: str
    code: str


def status_description(payload: bytes) -> str | None:
    """The Description of a status message (the reason of a refusal), from an already validated payload."""
    try:
        root = etree.fromstring(payload, _PARSER)
    except etree.XMLSyntaxError:
        return None
    found = root.find(f".//{{{EDXML_NS}}}MessageHeader/{{{EDXML_NS}}}Description")
    return (found.text or "").strip()[:1000] if found is not None else None


class ReceiptMatcher:
    def __init__(
        self, *, broker: Broker, db: Database, recorder: EventRecorder, payload_store: PayloadStore, topics: Topics
    ) -> None:
        self._topics = topics
        self.group = topics.receipts_group
        self._broker = broker
        self._db = db
        self._recorder = recorder
        self._payload_store = payload_store
        self.matched = 0
        self.unmatched = 0
        # Receipts recorded by this process but perhaps not yet flushed to the database.
        self._recent: dict[tuple[str, str, str], None] = {}

    async def run(self, stop: asyncio.Event) -> None:
        consumer = self._broker.consumer(self.group, pattern=self._topics.agency_pattern, patience=FETCH_PATIENCE)
        await consume_until(stop, consumer, self._process, label=self.group)

    async def _process(self, records: list[ConsumedRecord]) -> None:
        mark = self._recorder.mark()
        for record in records:
            await self.handle(record)
        try:
            await self._recorder.flush(since=mark)
        except EventsNotStored:
            self._recent.clear()  # some of them may not be stored: when the batch comes again, the database decides
            raise

    async def handle(self, record: ConsumedRecord) -> MatchedReceipt | None:
        if dict(record.headers).get("kind") != MessageKind.STATUS.value.encode():
            return None
        try:
            envelope, payload_ref = envelope_from_record(record)
        except NotADocbusRecord as exc:
            log.error("receipt matcher: %s is not a docbus record; skipped", exc)
            return None
        payload = await self._payload_store.get(payload_ref) if payload_ref else record.value
        return await self.match(envelope, payload)

    async def match(self, receipt: Envelope, payload: bytes) -> MatchedReceipt | None:
        code = receipt.status_code or ""
        original = await self._find_original(receipt)
        if original is None:
            self.unmatched += 1
            log.info("receipt %s (%s) answers no message in this bus", receipt.message_id, receipt.response_for)
            return None
        if await self._seen(original, receipt.sender, code):
            return MatchedReceipt(original, code)
        meaning, status = STATUS_CODES.get(code, ("unknown status code", None))
        detail: dict[str, Any] = {
            "code": code,
            "meaning": meaning,
            "from": receipt.sender,
            "status_message_id": receipt.message_id,
        }
        description = status_description(payload)
        if description:
            detail["description"] = description
        self._recorder.record(NewEvent(original, "RECEIPT", actor=receipt.sender, detail=detail, status=status))
        self.matched += 1
        RECEIPTS.labels(code).inc()
        return MatchedReceipt(original, code)

    async def _find_original(self, receipt: Envelope) -> str | None:
        if not receipt.response_for:
            return None
        addressee = receipt.receivers[0] if receipt.receivers else None
        query = (
            select(messages.c.id, messages.c.receivers)
            .where(messages.c.business_id == receipt.response_for, messages.c.kind == MessageKind.EDOC.value)
            .order_by(messages.c.id.desc())
        )
        if addressee:
            query = query.where(messages.c.sender == addressee)
        async with self._db.reading() as conn:
            rows = (await conn.execute(query)).all()
        # The newest document with that id that was sent to the receipt's sender (updates share the DocumentId).
        for row in rows:
            if f'"{receipt.sender}"' in row.receivers:
                return str(row.id)
        return None

    async def _seen(self, original: str, reporter: str, code: str) -> bool:
        """One receipt per (document, reporting agency, code): the same 03 arriving over two axes, or fetched
        twice, is recorded once."""
        key = (original, reporter, code)
        if key in self._recent:
            return True
        self._recent[key] = None
        if len(self._recent) > 100_000:
            self._recent.pop(next(iter(self._recent)))
        async with self._db.reading() as conn:
            found = await conn.scalar(
                select(events.c.id).where(
                    events.c.message_id == original,
                    events.c.type == "RECEIPT",
                    events.c.detail.contains(f'"code":"{code}"'),
                    events.c.detail.contains(f'"from":"{reporter}"'),
                )
            )
        return found is not None
