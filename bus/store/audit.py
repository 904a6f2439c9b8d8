"""The hash chain over a message's events: each event's hash covers the previous one, so an edited or deleted
event breaks every hash after it. ``docbus audit verify`` recomputes the chains offline."""

from __future__ import annotations

import hashlib
from collections.abc import Callable
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


def as_utc(value: object) -> datetime:
    """An instant from the database as an aware datetime: PostgreSQL hands it back aware, SQLite naive UTC."""
    assert isinstance(value, datetime)
    return value.replace(tzinfo=UTC) if value.tzinfo is None else value


def utc_iso(at: datetime) -> str:
    """One spelling of an instant, whether the database hands it back aware (PostgreSQL) or naive UTC (SQLite)."""
    return as_utc(at).astimezone(UTC).isoformat()


def verify_chain(message_id: str, chain: list[dict[str, Any]]) -> list[str]:
    """Problems found in one message's events (ordered by seq); empty when the chain is intact."""

    def recompute(prev: str, event: dict[str, Any]) -> str:
        return event_hash(
            prev,
            message_id=message_id,
            seq=event["seq"],
            type=event["type"],
            at=event["at"],
            actor=event["actor"],
            destination=event["destination"],
            detail=event["detail"],
        )

    return verify_links(message_id, "event", "type", chain, recompute)


def verify_links(
    owner: str, unit: str, kind: str, chain: list[dict[str, Any]], recompute: Callable[[str, dict[str, Any]], str]
) -> list[str]:
    """Problems found in one hash chain (links ordered by ``seq``, each with ``prev_hash`` and ``hash``; ``kind``
    names the field that says what a link records): a missing link, a link that does not follow the one before
    it, a link whose hash ``recompute`` (from the previous hash and the link) does not give. Shared by a message's
    events and an agency's history, named ``owner``'s ``unit`` in the problems."""
    problems = []
    prev = GENESIS
    for expected_seq, link in enumerate(chain, start=1):
        if link["seq"] != expected_seq:
            problems.append(f"{owner}: {unit} {expected_seq} is missing (found seq {link['seq']})")
        if link["prev_hash"] != prev:
            problems.append(f"{owner}: {unit} {link['seq']} does not follow the one before it")
        if recompute(prev, link) != link["hash"]:
            problems.append(f"{owner}: {unit} {link['seq']} ({link[kind]}) was altered")
        prev = link["hash"]
    return problems
