"""``GET /v1/destinations`` over real HTTP, on SQLite and PostgreSQL: a bus forwarding to the national axis
simulator and to a file archive reports each destination as its worker finds it, while the axis works, while it is
down (failing, then its breaker open, receipts not fetched) and once it is back; the archive stays up throughout.
The worker's rows leave with it, the worker's metrics say the same, and agencies may not look."""

from __future__ import annotations

import asyncio
import os
import re
import subprocess
import sys
import time
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest

from docbus.settings import Settings
from docbus.simulators import SimulatorConfig, create_app, serve
from docbus.store.agencies import AgencyDirectory, Role
from docbus.store.database import Database
from docbus.store.destination_health import read_reports
from docbus.store.migrate import upgrade_async

from ..conftest import start_gateway
from .test_forwarding import document

XML = {"Content-Type": "application/xml"}
SENDER, OPERATOR = "000.00.00.G22", "000.00.99.H41"
ROUTES = """
[[destination]]
name = "national_axis"

[[destination]]
name = "archive"
adapter = "file"

[[rule]]
level1 = ["H41"]
destination = "archive"

[[rule]]
any = true
destination = "national_axis"
"""


@dataclass
class Bus:
    base: str
    agency: httpx.AsyncClient
    operator: httpx.AsyncClient
    sim: httpx.AsyncClient
    db: Database
    operator_key: str
    env: dict[str, str]  # for docbus commands on this bus' database and routes

    async def send(self, template: bytes, receivers: tuple[str, ...]) -> str:
        answer = await self.agency.post("/v1/messages", content=document(template, receivers), headers=XML)
        assert answer.status_code == 202, answer.text
        return str(answer.json()["message_id"])

    async def destinations(self) -> dict[str, dict[str, Any]]:
        answer = await self.operator.get("/v1/destinations")
        assert answer.status_code == 200, answer.text
        return {d["name"]: d for d in answer.json()["destinations"]}

    async def until(self, check: Callable[[dict[str, dict[str, Any]]], bool], timeout: float = 30) -> dict[str, Any]:
        deadline = time.monotonic() + timeout
        while True:
            found = await self.destinations()
            if check(found):
                return found
            assert time.monotonic() < deadline, found
            await asyncio.sleep(0.1)


@pytest.fixture
async def bus(tmp_path: Path, database_url: str) -> AsyncIterator[Bus]:
    routes = tmp_path / "routes.toml"
    routes.write_text(ROUTES)
    (tmp_path / "archive").mkdir()
    async with serve(create_app("national-axis", SimulatorConfig(receipt_delays=(0.05, 0.1, 0.15)))) as sim_url:
        settings = Settings(
            data_dir=tmp_path / "data",
            database_url=database_url,
            routes_file=routes,
            receipt_poll_seconds=0.2,
            health_report_seconds=0.2,
            adapters={
                "archive": {"directory": str(tmp_path / "archive")},
                "national_axis": {
                    "url": sim_url,
                    "system_id": "docbus",
                    "secret": "docbus-secret",
                    "retry": {"base_delay_seconds": 0.05, "max_delay_seconds": 0.2, "max_attempts": 1000},
                    "breaker": {"failure_threshold": 3, "reset_seconds": 1},
                },
            },
        )
        await upgrade_async(database_url)
        db = Database(database_url)
        directory = AgencyDirectory(db)
        agency_key = (await directory.add(SENDER, name="Văn phòng Chính phủ"))[1]
        operator_key = (await directory.add(OPERATOR, name="Giám sát", role=Role.OPERATOR))[1]
        server, task, base = await start_gateway(settings)
        try:
            async with (
                httpx.AsyncClient(base_url=base, headers={"Authorization": f"Bearer {agency_key}"}) as agency,
                httpx.AsyncClient(base_url=base, headers={"Authorization": f"Bearer {operator_key}"}) as operator,
                httpx.AsyncClient(base_url=sim_url) as sim,
            ):
                env = {k: v for k, v in os.environ.items() if not k.startswith("DOCBUS_")}
                env |= {
                    "DOCBUS_DATA_DIR": str(settings.data_dir),
                    "DOCBUS_DATABASE_URL": database_url,
                    "DOCBUS_ROUTES_FILE": str(routes),
                    "DOCBUS_HEALTH_REPORT_SECONDS": "0.2",
                }
                yield Bus(base, agency, operator, sim, db, operator_key, env)
        finally:
            server.should_exit = True
            await task
        try:
            assert await read_reports(db) == []  # a worker that stops takes its reports with it
        finally:
            await db.dispose()


def metric(text: str, name: str, destination: str) -> float:
    prefix = f'{name}{{destination="{destination}"}} '
    return float(next(line for line in text.splitlines() if line.startswith(prefix)).split()[-1])


async def test_each_destination_is_reported_as_its_worker_finds_it(bus: Bus, sample_bytes: dict[str, bytes]) -> None:
    template = sample_bytes["edoc_with_attachment_dc0bdef0.edxml"]
    assert (await bus.agency.get("/v1/destinations")).status_code == 403

    await bus.send(template, ("000.00.00.H14", "000.00.01.H41"))
    found = await bus.until(
        lambda d: (
            all(d[n]["last_success_at"] for n in ("national_axis", "archive")) and d["national_axis"]["in_flight"] == 0
        )
    )
    for name, adapter in (("national_axis", "national_axis"), ("archive", "file")):
        assert found[name]["state"] == "up" and found[name]["adapter"] == adapter
        assert found[name]["last_failure"] is None and found[name]["dead_letters_waiting"] == 0
        [worker] = found[name]["workers"]
        assert worker["breaker"] == "closed" and worker["delivered"] == 1 and worker["failing_attempts"] == 0
        assert found[name]["stale_workers"] == []
    assert found["national_axis"]["receipts_failing"] is None

    # The axis goes down: its worker fails, then its breaker opens; fetching receipts fails too. The archive
    # (another destination, its own worker) goes on.
    (await bus.sim.post("/_sim/faults", json={"down": True})).raise_for_status()
    waiting = await bus.send(template, ("000.00.00.H14", "000.00.02.H41"))
    found = await bus.until(
        lambda d: d["national_axis"]["state"] == "down" and d["national_axis"]["receipts_failing"] is not None
    )
    national = found["national_axis"]
    assert national["last_failure"]["reason"].startswith("national axis sendEdoc: HTTP 503")
    assert national["receipts_failing"]["reason"] and national["receipts_failing"]["since"]
    assert national["in_flight"] == 1 and national["workers"][0]["failing_attempts"] >= 3
    metrics = (await bus.operator.get("/metrics")).text
    assert metric(metrics, "docbus_destination_breaker_open", "national_axis") == 1
    assert metric(metrics, "docbus_destination_breaker_open", "archive") == 0
    archive = found["archive"]
    assert archive["state"] == "up" and archive["workers"][0]["delivered"] == 2
    page = await bus.operator.get("/dashboard", auth=httpx.BasicAuth("operator", bus.operator_key))
    assert page.status_code == 200
    assert re.search(r"<td>national_axis</td><td><span class=\"bad\">down</span>", page.text), page.text
    assert re.search(r"<td>archive</td><td><span class=\"ok\">up</span>", page.text)
    shown = await asyncio.to_thread(
        subprocess.run,
        [sys.executable, "-m", "docbus.cli", "destinations"],
        env=bus.env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert shown.returncode == 0, shown.stderr
    lines = shown.stdout.splitlines()
    assert lines[0].startswith("national_axis") and " down " in lines[0] and "1 in flight" in lines[0]
    assert lines[1].strip().startswith("failing since the last success, last at ") and "HTTP 503" in lines[1]
    assert lines[2].strip().startswith("receipts cannot be fetched since ")
    assert lines[3].startswith("archive") and " up " in lines[3]

    # Back: the breaker lets a try through, it succeeds, and the state follows.
    (await bus.sim.delete("/_sim/faults")).raise_for_status()
    found = await bus.until(
        lambda d: d["national_axis"]["state"] == "up" and d["national_axis"]["receipts_failing"] is None
    )
    national = found["national_axis"]
    assert national["workers"][0]["delivered"] == 2 and national["in_flight"] == 0
    assert national["last_success_at"] > national["last_failure"]["at"]
    timeline = (await bus.agency.get(f"/v1/messages/{waiting}")).json()
    assert [e["destination"] for e in timeline["events"] if e["type"] == "DELIVERED"].count("national_axis") == 1
