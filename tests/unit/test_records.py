"""Reading the envelope back from a record's headers, and refusing records that do not carry one."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest

from docbus.broker.base import ConsumedRecord
from docbus.records import NotADocbusRecord, envelope_from_record, message_id_of, record_headers

ENVELOPE = {
    "message_id": "01M8MCV6JR5WHTNXDA5ST3YG2M",
    "kind": "edoc",
    "schema_id": "qcvn102.edoc",
    "schema_version": "2016.1",
    "sender": "000.00.00.G22",
    "receivers": ["000.00.00.H41", "000.00.00.H14"],
    "business_id": "000.00.00.G22,2026/11/27,1/VPCP",
    "sha256": "ab" * 32,
    "size": 10240,
    "content_type": "application/xml",
    "trace_id": "0" * 32,
    "received_at": datetime(2026, 11, 29, 12, 0, tzinfo=UTC),
    "payload_ref": "dir:2026/11/29/01M8MCV6JR5WHTNXDA5ST3YG2M",
}


def record(headers: tuple[tuple[str, bytes], ...]) -> ConsumedRecord:
    return ConsumedRecord("docbus.agency.000.00.00.G22", 2, 41, b"key", b"value", headers, 0)


def test_a_docbus_record_reads_back() -> None:
    envelope, ref = envelope_from_record(record(record_headers(ENVELOPE)))
    assert envelope.message_id == ENVELOPE["message_id"]
    assert envelope.receivers == ("000.00.00.H41", "000.00.00.H14")
    assert envelope.size == 10240 and envelope.received_at == ENVELOPE["received_at"]
    assert ref == ENVELOPE["payload_ref"]


def replaced(name: str, value: bytes | None) -> tuple[tuple[str, bytes], ...]:
    headers = [(k, v) for k, v in record_headers(ENVELOPE) if k != name]
    return tuple(headers if value is None else [*headers, (name, value)])


@pytest.mark.parametrize(
    ("headers", "why"),
    [
        ((), "no 'schema' header"),
        (replaced("sender", None), "no 'sender' header"),
        (replaced("sender", b"\xff\xfe"), "a header is not UTF-8"),
        (replaced("kind", b"parcel"), "'parcel' is not a valid MessageKind"),
        (replaced("size", b"big"), "invalid literal for int()"),
        (replaced("received-at", b"yesterday"), "Invalid isoformat string"),
    ],
)
def test_a_record_without_an_envelope_is_named_with_what_is_wrong(
    headers: tuple[tuple[str, bytes], ...], why: str
) -> None:
    with pytest.raises(NotADocbusRecord) as caught:
        envelope_from_record(record(headers))
    assert str(caught.value).startswith("docbus.agency.000.00.00.G22[2]@41: ")
    assert why in str(caught.value)


def test_message_id_of_never_raises() -> None:
    assert message_id_of(record(record_headers(ENVELOPE))) == ENVELOPE["message_id"]
    assert message_id_of(record(())) == ""
    assert message_id_of(record((("message-id", b"\xff"),))) == "\ufffd"
