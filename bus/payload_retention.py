"""Payload retention: the bytes of a settled message go some days after it arrived; everything else stays.

What the bus must be able to show years later is what was sent, by whom, to whom, when, and what became of it:
the message row, its signed receipt and its hash-chained timeline. The documents themselves are kept by the
agencies at both ends, and keeping every packet (some of them 50 MB of scanned attachments) for ever is what
makes the database and the payload store grow without end. With ``DOCBUS_PAYLOAD_RETENTION_DAYS`` set, workers
delete the payload of each message received longer ago than that once it is **settled**:

- it is published (no outbox row of it waits);
- no dead letter of it waits for a resend;
- at every destination it went to, and every destination the routes send it to now, the latest of
  FORWARDING, RETRYING, DELIVERED, FAILED, DEAD and RESENT is DELIVERED or FAILED (a message for local agencies
  only, or accepted while no routes were configured, goes nowhere and is settled once published).

A message that is not settled keeps its payload however old it is: a destination that has been down for longer
than the retention still gets every byte. A destination added to the routes after a message was forwarded never
receives it, so such a message keeps its payload too (the safe side).

Deleting the payload row, clearing the claim-check reference, recording ``payload_purged_at`` and appending a
PAYLOAD_PURGED event (with the sha256 and size of what went, so the timeline still proves what was sent) happen
in one transaction, which reads again inside it whether each message is settled (on SQLite under the write
lock, so a resend or a new attempt cannot slip in between). A claim-checked file is removed after the commit: a
crash in between leaves a file nobody points to, never a message pointing to nothing.
``GET /v1/messages/{id}/payload`` then answers 410.

Candidates are read in id order from ``payloads`` and from the claim-checked messages (through a partial index
of the messages with a ``payload_ref``, which purging clears), so a pass never walks over what earlier passes
purged. Each batch of at most ``batch`` messages is settled and purged in a short transaction of its own, so
intake's group commits, which need the same write lock on SQLite, wait for one batch at a time: purging 100,000
payloads of 10 KB from a SQLite file took 1,000 transactions of 10-11 ms (median; 23 ms at most) with the default
100, against 23 ms (54 ms at most) with 200 (``tests/benchmark/payload_retention_bench.py``). Every worker
runs it; when two passes meet, the second finds the batch purged already (``payload_purged_at`` is set once).
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import orjson
from sqlalchemy import Select, delete, select, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncConnection

from docbus.flows import DESTINATION_STATES
from docbus.ids import message_id_bound
from docbus.metrics import PAYLOADS_PURGED
from docbus.payload_store import PayloadStore
from docbus.periodic import Retention
from docbus.routing import LOCAL, RouteTable
from docbus.store.database import Database
from docbus.store.messages import NewEvent, append_events_in
from docbus.store.tables import dead_letters, events, messages, outbox, payloads

log = logging.getLogger(__name__)

PURGE_ACTOR = "retention"
PAYLOAD_PURGED = "PAYLOAD_PURGED"
FINAL_STATES = frozenset({"DELIVERED", "FAILED"})
_CANDIDATE_COLUMNS = (messages.c.id, messages.c.receivers, messages.c.sha256, messages.c.size, messages.c.payload_ref)


@dataclass(frozen=True, slots=True)
class _Candidate:
    message_id: str
    receivers: tuple[str, ...]
    sha256: str
    size: int
    payload_ref: str | None


@dataclass(frozen=True)
class PurgeReport:
    """What one pass did: payloads deleted, and old messages it left alone because they are not settled."""

    purged: int
    kept: int


class PayloadRetention(Retention):
    """Deletes settled payloads older than ``retention_seconds``; ``run`` does it every ``interval_seconds``."""

    what = "payload retention"

    def __init__(
        self,
        db: Database,
        payload_store: PayloadStore,
        routes: RouteTable,
        local_agencies: Callable[[], frozenset[str]],
        *,
        retention_seconds: float,
        interval_seconds: float = 300.0,
        batch: int = 100,
        pause_seconds: float = 0.005,
    ) -> None:
        super().__init__(
            retention_seconds=retention_seconds,
            interval_seconds=interval_seconds,
            batch=batch,
            pause_seconds=pause_seconds,
        )
        self._db = db
        self._store = payload_store
        self._routes = routes
        self._local_agencies = local_agencies

    async def _pass(self) -> str | None:
        report = await self.purge_once()
        return f"deleted {report.purged} payloads ({report.kept} old ones not settled)" if report.purged else None

    async def purge_once(self, *, now: datetime | None = None, dry_run: bool = False) -> PurgeReport:
        """One pass over the messages received before the retention's cutoff; ``now`` is for tests. A dry run
        counts what would go (as things stand while it reads) and changes nothing."""
        now = now or datetime.now(UTC)
        bound = message_id_bound(int(now.timestamp() * 1000) - self._retention_ms, upper=False)
        purged = kept = 0
        for source in (self._inline_after, self._claim_checked_after):
            after = ""
            while True:
                candidates = await source(after, bound)
                if not candidates:
                    break
                after = candidates[-1].message_id
                count = len(await self._settled_now(candidates)) if dry_run else await self._purge(candidates, now)
                purged += count
                kept += len(candidates) - count
                await asyncio.sleep(self._pause)  # intake's writer takes the lock between batches
        return PurgeReport(purged, kept)

    # ------------------------------------------------------------------------------------------ candidates

    async def _inline_after(self, after: str, bound: str) -> list[_Candidate]:
        """The next payloads stored in the database, in id order."""
        query = (
            select(*_CANDIDATE_COLUMNS)
            .select_from(payloads.join(messages, messages.c.id == payloads.c.message_id))
            .where(payloads.c.message_id > after, payloads.c.message_id < bound)
            .order_by(payloads.c.message_id)
            .limit(self._batch)
        )
        return await self._read(query)

    async def _claim_checked_after(self, after: str, bound: str) -> list[_Candidate]:
        """The next claim-checked payloads that still exist, in id order."""
        query = (
            select(*_CANDIDATE_COLUMNS)
            .where(messages.c.payload_ref.is_not(None), messages.c.id > after, messages.c.id < bound)
            .order_by(messages.c.id)
            .limit(self._batch)
        )
        return await self._read(query)

    async def _read(self, query: Select[Any]) -> list[_Candidate]:
        async with self._db.reader.connect() as conn:
            rows = await conn.execute(query)
            return [
                _Candidate(str(mid), tuple(orjson.loads(receivers)), str(sha), int(size), ref)
                for mid, receivers, sha, size, ref in rows
            ]

    # -------------------------------------------------------------------------------------------- settled?

    async def _settled_now(self, candidates: Sequence[_Candidate]) -> list[_Candidate]:
        async with self._db.reader.connect() as conn:
            return await self._settled(conn, candidates)

    async def _settled(self, conn: AsyncConnection, candidates: Sequence[_Candidate]) -> list[_Candidate]:
        """The candidates that are settled and not purged yet, read inside the purging transaction: on SQLite
        under the write lock, so nothing can unsettle them before the commit."""
        ids = [c.message_id for c in candidates]
        unpurged = await _ids(
            conn, select(messages.c.id).where(messages.c.id.in_(ids), messages.c.payload_purged_at.is_(None))
        )
        unpublished = await _ids(
            conn, select(outbox.c.message_id).where(outbox.c.message_id.in_(ids), outbox.c.published_at.is_(None))
        )
        waiting = await _ids(
            conn,
            select(dead_letters.c.message_id).where(
                dead_letters.c.message_id.in_(ids), dead_letters.c.resent_at.is_(None)
            ),
        )
        latest = await _latest_destination_states(conn, ids)
        local = self._local_agencies()
        settled = []
        for candidate in candidates:
            mid = candidate.message_id
            if mid not in unpurged or mid in unpublished or mid in waiting:
                continue
            states = latest.get(mid, {})
            planned, _uncovered = self._routes.plan(candidate.receivers, local)
            destinations = (set(planned) - {LOCAL}) | set(states)
            if all(states.get(d) in FINAL_STATES for d in destinations):
                settled.append(candidate)
        return settled

    # --------------------------------------------------------------------------------------------- purging

    async def _purge(self, candidates: Sequence[_Candidate], now: datetime) -> int:
        """Delete the settled ones' payloads and record it, in one transaction; then remove claim-checked files."""
        for _attempt in range(5):
            try:
                async with self._db.transaction() as conn:
                    chosen = await self._settled(conn, candidates)
                    if not chosen:
                        return 0
                    chosen_ids = [c.message_id for c in chosen]
                    await conn.execute(delete(payloads).where(payloads.c.message_id.in_(chosen_ids)))
                    await conn.execute(
                        update(messages)
                        .where(messages.c.id.in_(chosen_ids))
                        .values(payload_purged_at=now, payload_ref=None)
                    )
                    await append_events_in(conn, [_purged_event(c, self._retention_ms) for c in chosen])
                break
            except IntegrityError:
                continue  # a timeline grew meanwhile (a receipt came): read the tails again
        else:
            raise RuntimeError("could not record purged payloads: their timelines kept changing")
        for candidate in chosen:
            if candidate.payload_ref is not None:
                try:
                    await self._store.delete(candidate.payload_ref)
                except Exception:
                    log.exception("payload %s of %s not removed", candidate.payload_ref, candidate.message_id)
        PAYLOADS_PURGED.inc(len(chosen))
        return len(chosen)


async def _ids(conn: AsyncConnection, query: Select[Any]) -> set[str]:
    return {str(row[0]) for row in await conn.execute(query)}


async def _latest_destination_states(conn: AsyncConnection, ids: Iterable[str]) -> dict[str, dict[str, str]]:
    """Per message, each destination's latest state (the destination events of a handful of messages)."""
    rows = await conn.execute(
        select(events.c.message_id, events.c.destination, events.c.type)
        .where(
            events.c.message_id.in_(list(ids)),
            events.c.destination.is_not(None),
            events.c.type.in_(DESTINATION_STATES),
        )
        .order_by(events.c.message_id, events.c.seq)
    )
    latest: dict[str, dict[str, str]] = {}
    for message_id, destination, state in rows:
        latest.setdefault(str(message_id), {})[str(destination)] = str(state)
    return latest


def _purged_event(candidate: _Candidate, retention_ms: int) -> NewEvent:
    detail: dict[str, object] = {
        "sha256": candidate.sha256,
        "size": candidate.size,
        "retention_days": round(retention_ms / 86_400_000, 4),
    }
    if candidate.payload_ref is not None:
        detail["payload_ref"] = candidate.payload_ref
    return NewEvent(candidate.message_id, PAYLOAD_PURGED, PURGE_ACTOR, detail=detail)
