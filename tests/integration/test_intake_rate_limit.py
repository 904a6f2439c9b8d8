"""The per-agency rate at the gateway, over real HTTP on SQLite and PostgreSQL: a flooding agency gets 429 with
Retry-After and nothing stored, before its body is read; other agencies go on; the budget comes back."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest
from sqlalchemy import func, select

from docbus.settings import Settings
from docbus.store.tables import messages

from ..conftest import RunningGateway
from .helpers import with_unique_document_id

XML = {"Content-Type": "application/xml"}
FLOODER, NEIGHBOUR = "000.00.00.G22", "000.00.00.A80"


@pytest.fixture
def gateway_settings(tmp_path: Path, database_url: str) -> Settings:
    return Settings(
        data_dir=tmp_path / "data",
        database_url=database_url,
        max_body_bytes=2 * 1024 * 1024,
        intake_rate_per_agency=0.5,  # a token every 2 s: a slow machine's requests stay within one
        intake_burst_per_agency=3,
    )


async def stored_from(gateway: RunningGateway, sender: str) -> int:
    async with gateway.db.reader.connect() as conn:
        return int(await conn.scalar(select(func.count()).select_from(messages).where(messages.c.sender == sender)))


async def test_a_flooding_agency_is_slowed_and_its_neighbours_are_not(
    gateway: RunningGateway, sample_bytes: dict[str, bytes]
) -> None:
    await gateway.register(FLOODER)
    await gateway.register(NEIGHBOUR)
    flood = sample_bytes["edoc_with_attachment_dc0bdef0.edxml"]
    other = sample_bytes["edoc_new.edxml"]
    async with gateway.client(FLOODER) as flooder, gateway.client(NEIGHBOUR) as neighbour:
        answers = [
            await flooder.post("/v1/messages", content=with_unique_document_id(flood), headers=XML) for _ in range(5)
        ]
        assert [a.status_code for a in answers] == [202, 202, 202, 429, 429]
        refused = answers[3]
        assert refused.headers["content-type"] == "application/problem+json"
        assert refused.headers["retry-after"] in ("1", "2")  # whole seconds, rounded up
        problem = refused.json()
        assert problem["type"].endswith("/rate-limited") and problem["status"] == 429
        assert 0 < problem["retry_after_seconds"] <= 2
        assert FLOODER in problem["detail"]
        assert await stored_from(gateway, FLOODER) == 3  # nothing of the refused ones

        # The sandbox spends the same budget; a body far over the cap is refused for the rate, unread.
        assert (await flooder.post("/v1/validate", content=flood, headers=XML)).status_code == 429
        big = b"<x>" + b"a" * (3 * 1024 * 1024) + b"</x>"
        last = await flooder.post("/v1/messages", content=big, headers=XML)
        assert last.status_code == 429

        accepted = await neighbour.post("/v1/messages", content=with_unique_document_id(other), headers=XML)
        assert accepted.status_code == 202  # another agency's bucket

        await asyncio.sleep(last.json()["retry_after_seconds"] + 0.1)  # a token is back
        again = await flooder.post("/v1/messages", content=with_unique_document_id(flood), headers=XML)
        assert again.status_code == 202
    assert await stored_from(gateway, FLOODER) == 4
    async with gateway.client() as anonymous:  # who the caller is comes first
        assert (await anonymous.post("/v1/messages", content=flood, headers=XML)).status_code == 401
