"""The hash chain over a message's events: each event's hash covers the previous one, so an edited or deleted
event breaks every hash after it. ``docbus audit verify`` recomputes the chains offline."""

from __future__ import annotations

import hashlib
from datetime import UTC, datetime
from typing import Any

from docbus.signing import canonical_json

GENESIS = "0" * 64


def event_hash(
    prev_hash: str,
    *,
    message_id: str,
    seq: int,
    type: str,
    at: datetime,
    actor: str,
    destination: str | None,
    detail: dict[str, Any],
) -> str:
    body = canonical_json(
        {
            "message_id": message_id,
            "seq": seq,
            "type": type,
            "at": utc_iso(at),
            "actor": actor,
            "destination": destination,
            "detail": detail,
        }
    )
    return hashlib.sha256(prev_hash.encode("ascii") + body).hexdigest()


def utc_iso(at: datetime) -> str:
    """One spelling of an instant, whether the database hands it back aware (PostgreSQL) or naive UTC (SQLite)."""
    aware = at.replace(tzinfo=UTC) if at.tzinfo is None else at.astimezone(UTC)
    return aware.isoformat()
