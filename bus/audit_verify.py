"""``docbus audit verify``: recompute every message's event hash chain, and every agency's chain of directory
changes, from the database, offline."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import orjson
from sqlalchemy import select

from docbus.store.agency_history import verify_agency_chain
from docbus.store.audit import verify_chain
from docbus.store.database import Database
from docbus.store.tables import agency_events, events


async def _chains(db: Database) -> AsyncIterator[tuple[str, list[dict[str, Any]]]]:
    current: str | None = None
    chain: list[dict[str, Any]] = []
    async with db.reader.connect() as conn:
        result = await conn.stream(select(events).order_by(events.c.message_id, events.c.seq))
        async for row in result:
            event = row._asdict()
            event["detail"] = orjson.loads(event["detail"])
            if event["message_id"] != current:
                if current is not None:
                    yield current, chain
                current, chain = event["message_id"], []
            chain.append(event)
    if current is not None:
        yield current, chain


async def verify_all(db: Database) -> tuple[int, int, list[str]]:
    """(messages checked, events checked, problems)."""
    messages = events_seen = 0
    problems: list[str] = []
    async for message_id, chain in _chains(db):
        messages += 1
        events_seen += len(chain)
        problems.extend(verify_chain(message_id, chain))
    return messages, events_seen, problems


async def verify_agencies(db: Database) -> tuple[int, int, list[str]]:
    """(agencies checked, directory changes checked, problems)."""
    chains: dict[str, list[dict[str, Any]]] = {}
    async with db.reader.connect() as conn:
        result = await conn.stream(select(agency_events).order_by(agency_events.c.organ_id, agency_events.c.seq))
        async for row in result:
            entry = row._asdict()
            entry["detail"] = orjson.loads(entry["detail"])
            chains.setdefault(entry["organ_id"], []).append(entry)
    problems = [problem for organ_id, chain in chains.items() for problem in verify_agency_chain(organ_id, chain)]
    return len(chains), sum(len(chain) for chain in chains.values()), problems
