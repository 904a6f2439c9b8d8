"""``GET /v1/events`` over real HTTP: a credential holds at most so many open streams per gateway process (each
polls the database); past that it gets 429 until one of its streams closes, and other callers are not affected."""

from __future__ import annotations

import asyncio
import contextlib
from pathlib import Path

import pytest

from docbus.settings import Settings

from ..conftest import RunningGateway


@pytest.fixture
def gateway_settings(tmp_path: Path, database_url: str) -> Settings:
    return Settings(data_dir=tmp_path / "data", database_url=database_url, event_streams_per_caller=2)


async def test_a_caller_holds_only_so_many_event_streams(gateway: RunningGateway) -> None:
    await gateway.register("000.00.00.G22")
    await gateway.register("000.00.00.H37")
    async with contextlib.AsyncExitStack() as held, gateway.client("000.00.00.G22") as agency:
        first = await held.enter_async_context(agency.stream("GET", "/v1/events"))
        second_stack = contextlib.AsyncExitStack()
        second = await second_stack.enter_async_context(agency.stream("GET", "/v1/events"))
        assert (first.status_code, second.status_code) == (200, 200)

        refused = await agency.get("/v1/events")
        assert refused.status_code == 429
        assert refused.headers["content-type"].startswith("application/problem+json")
        assert refused.json()["type"].endswith("/too-many-requests")
        assert "2 open event streams" in refused.json()["detail"]

        async with gateway.client("000.00.00.H37") as other, other.stream("GET", "/v1/events") as theirs:
            assert theirs.status_code == 200  # the limit is per credential

        await second_stack.aclose()  # the gateway notices the closed connection and gives the slot back
        for _ in range(100):
            async with agency.stream("GET", "/v1/events") as again:
                if again.status_code == 200:
                    break
            await asyncio.sleep(0.1)
        assert again.status_code == 200
