"""What was done to each agency's entry in the directory, by whom and when, hash-chained per agency.

Who may submit as a public body is decided in the directory: registering an agency, rotating its key, suspending
and resuming it, binding its key to a client certificate. Each change is appended here in the transaction that
makes it, with its time, its actor (an operator's organ id, or the command line) and what changed (never a key:
keys are shown once; a key's prefix and a certificate's fingerprint are what identify them). Each entry's hash
covers the one before it, as a message's events do (:mod:`docbus.store.audit`), so an entry edited or deleted
afterwards breaks the chain, which ``docbus audit verify`` recomputes offline.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import orjson
from sqlalchemy import insert, select
from sqlalchemy.ext.asyncio import AsyncConnection

from docbus.signing import canonical_json
from docbus.store.audit import GENESIS, as_utc, utc_iso, verify_links
from docbus.store.tables import agency_events


@dataclass(frozen=True, slots=True)
class AgencyEvent:
    organ_id: str
    seq: int
    action: str  # registered, key-rotated, suspended, resumed, certificate-bound, certificate-unbound
    at: datetime
    actor: str
    detail: dict[str, Any]

    def as_dict(self) -> dict[str, Any]:
        return {
            "organ_id": self.organ_id,
            "seq": self.seq,
            "action": self.action,
            "at": utc_iso(self.at),
            "actor": self.actor,
            "detail": self.detail,
        }


_HASHED = ("organ_id", "seq", "action", "at", "actor", "detail")  # what an entry's hash covers


def agency_event_hash(
    prev_hash: str, *, organ_id: str, seq: int, action: str, at: datetime, actor: str, detail: dict[str, Any]
) -> str:
    body = canonical_json(
        {"organ_id": organ_id, "seq": seq, "action": action, "at": utc_iso(at), "actor": actor, "detail": detail}
    )
    return hashlib.sha256(prev_hash.encode("ascii") + body).hexdigest()


async def append_agency_event(
    conn: AsyncConnection, organ_id: str, action: str, *, at: datetime, actor: str, detail: dict[str, Any]
) -> None:
    """Append one entry to ``organ_id``'s chain inside the caller's transaction (the one making the change).
    Two changes to one agency at once: the second insert breaks the unique (organ_id, seq) and its transaction,
    change included, rolls back."""
    last = (
        await conn.execute(
            select(agency_events.c.seq, agency_events.c.hash)
            .where(agency_events.c.organ_id == organ_id)
            .order_by(agency_events.c.seq.desc())
            .limit(1)
        )
    ).first()
    seq, prev = (last.seq + 1, last.hash) if last is not None else (1, GENESIS)
    actor = actor[:128]
    digest = agency_event_hash(prev, organ_id=organ_id, seq=seq, action=action, at=at, actor=actor, detail=detail)
    await conn.execute(
        insert(agency_events).values(
            organ_id=organ_id,
            seq=seq,
            action=action,
            at=at,
            actor=actor,
            detail=orjson.dumps(detail).decode(),
            prev_hash=prev,
            hash=digest,
        )
    )


async def agency_history(conn: AsyncConnection, organ_id: str) -> list[AgencyEvent]:
    """``organ_id``'s entries, oldest first."""
    rows = await conn.execute(
        select(agency_events).where(agency_events.c.organ_id == organ_id).order_by(agency_events.c.seq)
    )
    return [
        AgencyEvent(
            organ_id=row.organ_id,
            seq=row.seq,
            action=row.action,
            at=as_utc(row.at),
            actor=row.actor,
            detail=orjson.loads(row.detail),
        )
        for row in rows
    ]


def verify_agency_chain(organ_id: str, chain: list[dict[str, Any]]) -> list[str]:
    """Problems found in one agency's entries (ordered by seq); empty when the chain is intact."""

    def recompute(prev: str, entry: dict[str, Any]) -> str:
        return agency_event_hash(prev, **{name: entry[name] for name in _HASHED})

    return verify_links(f"agency {organ_id}", "entry", "action", chain, recompute)
