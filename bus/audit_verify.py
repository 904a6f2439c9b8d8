"""``docbus audit verify``: recompute every message's event hash chain, and every agency's chain of directory
changes, from the database, offline."""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from typing import Any

import orjson
from sqlalchemy import Table, select

from docbus.store.agency_history import verify_agency_chain
from docbus.store.audit import verify_chain
from docbus.store.database import Database
from docbus.store.tables import agency_events, events


async def _chains(db: Database, table: Table, owner: str) -> AsyncIterator[tuple[str, list[dict[str, Any]]]]:
    """``table``'s rows grouped by their ``owner`` column (a message, an agency), each group in ``seq`` order,
    streamed: one group in memory at a time."""
    current: str | None = None
    chain: list[dict[str, Any]] = []
    async with db.reader.connect() as conn:
        result = await conn.stream(select(table).order_by(table.c[owner], table.c.seq))
        async for row in result:
            link = row._asdict()
            link["detail"] = orjson.loads(link["detail"])
            if link[owner] != current:
                if current is not None:
                    yield current, chain
                current, chain = link[owner], []
            chain.append(link)
    if current is not None:
        yield current, chain


async def verify_all(db: Database) -> tuple[int, int, list[str]]:
    """(messages checked, events checked, problems)."""
    return await _verify(_chains(db, events, "message_id"), verify_chain)


async def verify_agencies(db: Database) -> tuple[int, int, list[str]]:
    """(agencies checked, directory changes checked, problems)."""
    return await _verify(_chains(db, agency_events, "organ_id"), verify_agency_chain)


async def _verify(
    chains: AsyncIterator[tuple[str, list[dict[str, Any]]]], check: Callable[[str, list[dict[str, Any]]], list[str]]
) -> tuple[int, int, list[str]]:
    owners = links = 0
    problems: list[str] = []
    async for owner, chain in chains:
        owners += 1
        links += len(chain)
        problems.extend(check(owner, chain))
    return owners, links, problems
