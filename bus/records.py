"""How a message travels in the broker: the payload (or a claim-check pointer) as the value, the envelope in headers.

Consumers route on the headers alone and only read the value when they deliver.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

import orjson

from docbus.broker.base import ConsumedRecord
from docbus.envelope import Envelope, MessageKind, SchemaRef


def record_headers(env: dict[str, Any]) -> tuple[tuple[str, bytes], ...]:
    """Kafka headers that let a consumer route without parsing the payload."""
    pairs = [
        ("message-id", env["message_id"]),
        ("kind", env["kind"]),
        ("schema", f"{env['schema_id']}/{env['schema_version']}"),
        ("sender", env["sender"]),
        ("receivers", ",".join(env["receivers"])),
        ("business-id", env["business_id"]),
        ("sha256", env["sha256"]),
        ("size", str(env["size"])),
        ("content-type", env["content_type"]),
        ("trace-id", env["trace_id"]),
        ("received-at", _utc(env["received_at"]).isoformat()),
    ]
    if env.get("response_for"):
        pairs.append(("response-for", env["response_for"]))
    if env.get("status_code"):
        pairs.append(("status-code", env["status_code"]))
    if env.get("payload_ref"):
        pairs.append(("payload-ref", env["payload_ref"]))
    return tuple((k, str(v).encode("utf-8")) for k, v in pairs)


def record_value(payload: bytes | None, env: dict[str, Any]) -> bytes:
    """The payload itself, or for claim-checked payloads a small pointer with its hash."""
    if env.get("payload_ref"):
        return orjson.dumps({"payload_ref": env["payload_ref"], "sha256": env["sha256"], "size": env["size"]})
    assert payload is not None
    return payload


def partition_key(business_id: str, response_for: str | None) -> bytes:
    """Records with the same key stay in order: a document's messages by its business id, and its receipts by
    the document they answer (a receipt's own business id differs per code), so 01 never overtakes 06."""
    return (response_for or business_id).encode("utf-8")


class NotADocbusRecord(ValueError):
    """A record on a docbus topic whose headers carry no envelope: another producer with rights to the topic
    wrote it, or it is damaged. Consumers log it, count it and go past it; stopping at it would stop a consumer
    group for good."""


def message_id_of(record: ConsumedRecord) -> str:
    """The record's message id, or ``""`` when it has none; never raises (a foreign header may not be UTF-8)."""
    for key, value in record.headers:
        if key == "message-id":
            return value.decode("utf-8", "replace")
    return ""


def envelope_from_record(record: ConsumedRecord) -> tuple[Envelope, str | None]:
    """The envelope carried in a record's headers, and the payload reference when the payload is claim-checked;
    :class:`NotADocbusRecord` (naming the record and what is wrong) when the headers do not carry one."""
    try:
        h = {k: v.decode("utf-8") for k, v in record.headers}
        schema_id, _, version = h["schema"].partition("/")
        envelope = Envelope(
            message_id=h["message-id"],
            kind=MessageKind(h["kind"]),
            schema=SchemaRef(schema_id, version),
            sender=h["sender"],
            receivers=tuple(r for r in h.get("receivers", "").split(",") if r),
            business_id=h["business-id"],
            sha256=h["sha256"],
            size=int(h["size"]),
            received_at=datetime.fromisoformat(h["received-at"]),
            content_type=h["content-type"],
            idempotency_key=None,
            trace_id=h["trace-id"],
            response_for=h.get("response-for"),
            status_code=h.get("status-code"),
        )
    except KeyError as exc:
        raise NotADocbusRecord(f"{_where(record)}: no {exc.args[0]!r} header") from None
    except UnicodeDecodeError:
        raise NotADocbusRecord(f"{_where(record)}: a header is not UTF-8") from None
    except ValueError as exc:  # an unknown kind, a size or a time that is not one
        raise NotADocbusRecord(f"{_where(record)}: {exc}") from None
    return envelope, h.get("payload-ref")


def _where(record: ConsumedRecord) -> str:
    return f"{record.topic}[{record.partition}]@{record.offset}"


def _utc(at: datetime) -> datetime:
    return at.replace(tzinfo=UTC) if at.tzinfo is None else at
