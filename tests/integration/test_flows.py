"""``GET /v1/flows`` over real HTTP on SQLite and PostgreSQL: documents delivered to one destination and dead at
another (a webhook nobody answers), the report's counts held against the timelines, and its refusals."""

from __future__ import annotations

import asyncio
from collections import Counter
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import pytest

from docbus.flows import BadWindow, Window, parse_window
from docbus.settings import Settings
from docbus.store.agencies import AgencyDirectory, Role
from docbus.store.database import Database
from docbus.store.migrate import upgrade_async

from ..conftest import free_port, start_gateway
from .test_forwarding import document

XML = {"Content-Type": "application/xml"}
ROUTES = """
[[destination]]
name = "archive"
adapter = "file"

[[destination]]
name = "unanswered"
adapter = "webhook"

[[rule]]
level1 = ["H41"]
destination = "archive"

[[rule]]
level1 = ["H14"]
destination = "unanswered"
"""
SENDERS = ("000.00.00.G22", "000.00.00.G17")
OPERATOR = "000.00.99.H41"


@pytest.fixture
async def bus(tmp_path: Path, database_url: str) -> AsyncIterator[tuple[str, dict[str, str]]]:
    routes = tmp_path / "routes.toml"
    routes.write_text(ROUTES)
    (tmp_path / "archive").mkdir()
    closed = f"http://127.0.0.1:{free_port()}/hook"  # nothing listens there
    settings = Settings(
        data_dir=tmp_path / "data",
        database_url=database_url,
        routes_file=routes,
        adapters={
            "archive": {"directory": str(tmp_path / "archive")},
            "unanswered": {
                "url": closed,
                "secret": "webhook-shared-secret",
                "connect_timeout": 0.5,
                "retry": {"max_attempts": 2, "base_delay_seconds": 0.05, "max_delay_seconds": 0.1},
            },
        },
    )
    await upgrade_async(database_url)
    db = Database(database_url)
    directory = AgencyDirectory(db)
    keys = {organ: (await directory.add(organ, name=f"Agency {organ}"))[1] for organ in SENDERS}
    keys[OPERATOR] = (await directory.add(OPERATOR, name="Giám sát", role=Role.OPERATOR))[1]
    server, task, base = await start_gateway(settings)
    try:
        yield base, keys
    finally:
        server.should_exit = True
        await task
        await db.dispose()


def client(base: str, key: str) -> httpx.AsyncClient:
    return httpx.AsyncClient(base_url=base, headers={"Authorization": f"Bearer {key}"}, timeout=30)


async def test_flows_count_what_the_timelines_show(
    bus: tuple[str, dict[str, str]], sample_bytes: dict[str, bytes]
) -> None:
    base, keys = bus
    template = sample_bytes["edoc_with_attachment_dc0bdef0.edxml"]
    sent: dict[str, list[str]] = {organ: [] for organ in SENDERS}
    plan = [("000.00.00.G22", ("000.00.01.H41",))] * 3 + [
        ("000.00.00.G22", ("000.00.02.H41", "000.00.03.H14")),
        ("000.00.00.G17", ("000.00.04.H41",)),
    ]
    for sender, receivers in plan:
        packet = document(template, receivers).replace(b"000.00.00.G22", sender.encode())
        async with client(base, keys[sender]) as agency:
            answer = await agency.post("/v1/messages", content=packet, headers=XML)
            assert answer.status_code == 202, answer.text
            sent[sender].append(answer.json()["message_id"])

    async with client(base, keys[OPERATOR]) as operator:
        timelines: dict[str, Any] = {}
        for _ in range(600):  # every destination settled: delivered, or dead after its two attempts
            timelines = {m: (await operator.get(f"/v1/messages/{m}")).json() for ids in sent.values() for m in ids}
            settled = [e for t in timelines.values() for e in t["events"] if e["type"] in ("DELIVERED", "DEAD")]
            if len(settled) == 6:
                break
            await asyncio.sleep(0.05)
        assert len(settled) == 6

        answer = await operator.get("/v1/flows", params={"since": "10m"})
        assert answer.status_code == 200, answer.text
        report = answer.json()
        only_g17 = (await operator.get("/v1/flows", params={"since": "10m", "sender": "000.00.00.G17"})).json()

    expected_status = {organ: Counter(timelines[m]["status"] for m in ids) for organ, ids in sent.items()}
    assert {s["sender"]: (s["received"], s["by_status"]) for s in report["senders"]} == {
        organ: (len(sent[organ]), dict(expected_status[organ])) for organ in SENDERS
    }
    flows = {(f["sender"], f["destination"]): f for f in report["destinations"]}
    assert set(flows) == {("000.00.00.G17", "archive"), ("000.00.00.G22", "archive"), ("000.00.00.G22", "unanswered")}
    assert flows["000.00.00.G22", "archive"]["by_state"] == {"DELIVERED": 4}
    assert flows["000.00.00.G17", "archive"]["by_state"] == {"DELIVERED": 1}
    assert flows["000.00.00.G22", "unanswered"]["by_state"] == {"DEAD": 1}
    assert flows["000.00.00.G22", "unanswered"]["delivery_ms"] is None
    assert all(f["oldest_in_flight_received_at"] is None for f in flows.values())  # nothing is in flight

    # Delivery times: from each timeline, arrival to the DELIVERED event's time.
    def delivered_ms(message_id: str) -> float:
        timeline = timelines[message_id]
        (at,) = [e["at"] for e in timeline["events"] if e["type"] == "DELIVERED"]
        return (datetime.fromisoformat(at) - datetime.fromisoformat(timeline["received_at"])).total_seconds() * 1000

    g22 = sorted(delivered_ms(m) for m in sent["000.00.00.G22"])
    timing = flows["000.00.00.G22", "archive"]["delivery_ms"]
    assert timing["samples"] == 4
    assert (timing["p50"], timing["max"]) == pytest.approx((g22[1], g22[-1]), abs=0.1)

    assert report["dead_letters_waiting"][0]["destination"] == "unanswered"
    assert report["dead_letters_waiting"][0]["waiting"] == 1
    assert report["outbox"]["unpublished"] == 0
    assert [s["sender"] for s in only_g17["senders"]] == ["000.00.00.G17"]
    assert [(f["sender"], f["destination"]) for f in only_g17["destinations"]] == [("000.00.00.G17", "archive")]


async def test_flows_are_for_operators_and_refuse_unreadable_windows(bus: tuple[str, dict[str, str]]) -> None:
    base, keys = bus
    async with client(base, keys["000.00.00.G22"]) as agency:
        assert (await agency.get("/v1/flows")).status_code == 403
    async with client(base, keys[OPERATOR]) as operator:
        for params, field in [
            ({"since": "yesterday"}, "since"),
            ({"since": "8d"}, "since"),  # longer than a window may be
            ({"until": "soon"}, "until"),
            ({"since": "2026-01-02T00:00:00Z", "until": "2026-01-01T00:00:00Z"}, "since"),  # ends before it starts
        ]:
            answer = await operator.get("/v1/flows", params=params)
            assert answer.status_code == 400, params
            assert answer.headers["content-type"].startswith("application/problem+json")
            assert [e["path"] for e in answer.json()["errors"]] == [f"/query/{field}"]
        earlier = await operator.get("/v1/flows", params={"since": "1h", "until": "2h"})  # 3h ago to 2h ago
        assert earlier.status_code == 200
        assert earlier.json()["senders"] == [] and earlier.json()["destinations"] == []


def test_windows_read_durations_and_instants() -> None:
    now = datetime(2026, 11, 28, 12, 0, tzinfo=UTC)
    assert parse_window("15m", None, now) == Window(now - timedelta(minutes=15), now)
    assert parse_window("1d", "2h", now) == Window(now - timedelta(hours=26), now - timedelta(hours=2))
    # Without an offset an instant is UTC; 11:00 in Hà Nội (+07:00) is 04:00 UTC.
    mixed = parse_window("2026-11-28T03:00:00", "2026-11-28T11:00:00+07:00", now)
    assert mixed == Window(datetime(2026, 11, 28, 3, tzinfo=UTC), datetime(2026, 11, 28, 4, tzinfo=UTC))
    for since in ("0m", "15", "m", "-1h", "1w"):
        with pytest.raises(BadWindow):
            parse_window(since, None, now)


def test_a_window_is_a_range_of_message_ids() -> None:
    from docbus.ids import new_message_id

    before = datetime.now(UTC) - timedelta(milliseconds=5)
    message_id = new_message_id()
    low, high = Window(before, before + timedelta(seconds=1)).id_range
    assert low <= message_id <= high
    low, high = Window(before - timedelta(hours=1), before).id_range
    assert not low <= message_id <= high
