"""``docbus demo``: the whole flow on one machine in one command.

Starts the bus on the embedded default (SQLite, embedded broker) with routes for one province (Nghệ An, H41),
both axis simulators, registers the agencies of the sample packets, sends real edXML packets (and one broken one,
to show a refusal), then prints every delivery and business receipt as it happens.
"""

from __future__ import annotations

import asyncio
import tempfile
import uuid
from pathlib import Path

import httpx
import orjson
from sqlalchemy import select

from docbus.settings import Settings
from docbus.simulators import SimulatorConfig, create_app, serve
from docbus.store.agencies import AgencyDirectory, Role
from docbus.store.audit import utc_iso
from docbus.store.database import Database
from docbus.store.migrate import upgrade_async
from docbus.store.tables import events

PROVINCE_ROUTES = """
[[destination]]
name = "provincial_axis"

[[destination]]
name = "national_axis"

[[rule]]
level1 = ["H41"]                 # Nghệ An: stays on the provincial axis
destination = "provincial_axis"

[[rule]]
any = true                       # everyone else: the national axis
destination = "national_axis"
"""
SAMPLE_DOCUMENTS = (
    "edoc_new.edxml",
    "edoc_with_attachment_dc0bdef0.edxml",
    "edoc_update.edxml",
    "edoc_replacement.edxml",
    "edoc_revocation.edxml",
)
BROKEN_SAMPLE = "edoc.edxml"


def default_samples_dir() -> Path:
    here = Path.cwd()
    for base in (here, *here.parents):
        candidate = base / "shared" / "samples" / "edxml"
        if candidate.is_dir():
            return candidate
    return here / "samples"


async def run_demo(*, port: int, samples: Path, data_dir: Path | None, duration: float | None) -> int:
    data = data_dir or Path(tempfile.mkdtemp(prefix="docbus-demo-"))
    data.mkdir(parents=True, exist_ok=True)
    routes = data / "routes.toml"
    routes.write_text(PROVINCE_ROUTES, encoding="utf-8")
    packets = {
        name: (samples / name).read_bytes() for name in (*SAMPLE_DOCUMENTS, BROKEN_SAMPLE) if (samples / name).exists()
    }
    if not packets:
        print(f"no sample packets in {samples}; pass --samples DIR")
        return 2
    config = SimulatorConfig(receipt_delays=(0.5, 1.5, 3.0))
    async with (
        serve(create_app("national-axis", config)) as national,
        serve(create_app("provincial-axis", config)) as provincial,
    ):
        axis = {"system_id": config.system_id, "secret": config.secret}
        settings = Settings(
            data_dir=data,
            database_url=None,
            kafka_bootstrap=None,
            routes_file=routes,
            adapters={"national_axis": {**axis, "url": national}, "provincial_axis": {**axis, "url": provincial}},
            receipt_poll_seconds=0.5,
        )
        url = settings.resolved_database_url()
        await upgrade_async(url)
        db = Database(url)
        directory = AgencyDirectory(db)
        keys: dict[str, str] = {}
        senders = {_sender(p) for name, p in packets.items() if name != BROKEN_SAMPLE}
        for organ in sorted(senders | {"000.00.99.H41"}):
            found = await directory.get(organ)
            role = Role.OPERATOR if organ == "000.00.99.H41" else Role.AGENCY
            keys[organ] = (
                await directory.rotate_key(organ)
                if found
                else (await directory.add(organ, name=f"Demo {organ}", role=role))[1]
            )
        import uvicorn

        from docbus.gateway.app import create_app as create_bus

        server = uvicorn.Server(uvicorn.Config(create_bus(settings), host="127.0.0.1", port=port, log_level="warning"))
        task = asyncio.create_task(server.serve())
        while not server.started:
            if task.done():
                task.result()
                return 1
            await asyncio.sleep(0.05)
        base = f"http://127.0.0.1:{port}"
        print(f"docbus demo running at {base}   (data in {data})")
        print(f"  API docs:            {base}/docs")
        print(f"  national axis sim:   {national}/_sim/received")
        print(f"  provincial axis sim: {provincial}/_sim/received")
        print(f"  operator key:        {keys['000.00.99.H41']}")
        print(f"  dashboard:           {base}/dashboard   (any user name, the operator key as password)")
        sent = await _send_samples(base, packets, keys)
        for message_id, name in sent.items():
            auth = f"Authorization: Bearer {keys['000.00.99.H41']}"
            print(f"  timeline of {name}: curl -H '{auth}' {base}/v1/messages/{message_id}")
        print("events as they happen (Ctrl-C to stop):")
        try:
            await _follow(db, sent, duration)
        finally:
            server.should_exit = True
            await task
            await db.dispose()
    return 0


def _sender(packet: bytes) -> str:
    from lxml import etree

    root = etree.fromstring(packet, etree.XMLParser(resolve_entities=False, no_network=True))
    found = root.find(".//{*}MessageHeader/{*}From/{*}OrganId")
    return (found.text or "").strip() if found is not None else ""


async def _send_samples(base: str, packets: dict[str, bytes], keys: dict[str, str]) -> dict[str, str]:
    sent: dict[str, str] = {}
    async with httpx.AsyncClient(base_url=base, timeout=30) as client:
        for name, packet in packets.items():
            if name == BROKEN_SAMPLE:
                continue
            sender = _sender(packet)
            response = await client.post(
                "/v1/messages",
                content=packet,
                headers={
                    "Content-Type": "application/xml",
                    "Authorization": f"Bearer {keys[sender]}",
                    "Idempotency-Key": f"demo-{uuid.uuid4()}",
                },
            )
            body = response.json()
            if response.status_code == 202:
                sent[body["message_id"]] = name
                print(f"  202 {name}: {body['message_id']} → {', '.join(body['receivers'])}")
            else:
                print(f"  {response.status_code} {name}: {body.get('detail')}")
        if BROKEN_SAMPLE in packets:
            any_key = next(iter(keys.values()))
            response = await client.post(
                "/v1/messages",
                content=packets[BROKEN_SAMPLE],
                headers={"Content-Type": "application/xml", "Authorization": f"Bearer {any_key}"},
            )
            problem = response.json()
            first = (problem.get("errors") or [{}])[0]
            print(
                f"  {response.status_code} {BROKEN_SAMPLE} (a broken packet, refused): {first.get('message_en')} "
                f"(line {first.get('line')}, column {first.get('column')})"
            )
    return sent


async def _follow(db: Database, sent: dict[str, str], duration: float | None) -> None:
    position = 0
    loop = asyncio.get_running_loop()
    deadline = loop.time() + duration if duration else None
    receipts = 0
    while deadline is None or loop.time() < deadline:
        async with db.reader.connect() as conn:
            rows = (await conn.execute(select(events).where(events.c.id > position).order_by(events.c.id))).all()
        for row in rows:
            position = row.id
            if row.message_id not in sent or row.type in ("ACCEPTED",):
                continue
            detail = orjson.loads(row.detail)
            what = sent[row.message_id]
            clock = utc_iso(row.at)[11:19]
            if row.type == "RECEIPT":
                receipts += 1
                meaning = f"{detail['code']} ({detail['meaning']}) from {detail['from']}"
                print(f"  {clock} RECEIPT {meaning} for {what}")
            elif row.type == "DELIVERED":
                print(f"  {clock} DELIVERED {what} to {row.destination} (remote id {detail.get('remote_id')})")
            else:
                print(f"  {clock} {row.type} {what} {row.destination or ''}")
        await asyncio.sleep(0.3)
    print(f"summary: {len(sent)} documents sent, {receipts} receipts received")
