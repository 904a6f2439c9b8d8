"""How long payload retention holds SQLite's write lock: stores N messages of SIZE bytes in a fresh SQLite file
(intake's group-committed writer), publishes them and records each delivered to one destination, then times one
retention pass and each of its purge transactions (intake's group commits wait for at most one of them).

    python tests/benchmark/payload_retention_bench.py [--messages 100000] [--size 10240] [--batch 100]
"""

from __future__ import annotations

import argparse
import asyncio
import hashlib
import shutil
import tempfile
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

from sqlalchemy import update
from transaction_timing import summary, timed_transactions  # beside this script

from docbus.envelope import Envelope, MessageKind, SchemaRef
from docbus.ids import new_message_id, new_trace_id
from docbus.payload_retention import PayloadRetention
from docbus.payload_store import DirectoryPayloadStore
from docbus.routing import RouteTable
from docbus.store.database import Database
from docbus.store.intake_writer import IntakeWriter, Submission
from docbus.store.messages import NewEvent, append_events_in
from docbus.store.migrate import upgrade_async
from docbus.store.tables import outbox

ROUTES = RouteTable.from_dict(
    {"destination": [{"name": "national"}], "rule": [{"destination": "national", "any": True}]}
)


def submission(n: int, body: bytes) -> Submission:
    env = Envelope(
        message_id=new_message_id(),
        kind=MessageKind.EDOC,
        schema=SchemaRef("qcvn102.edoc", "2016.1"),
        sender="000.00.00.G22",
        receivers=("000.00.00.H41",),
        business_id=f"bench-{n}",
        sha256=hashlib.sha256(body).hexdigest(),
        size=len(body),
        received_at=datetime.now(UTC),
        content_type="application/xml",
        idempotency_key=None,
        trace_id=new_trace_id(),
    )
    return Submission(env, body, f"bench-{n}", receipt=b"{}", topic="docbus.agency.000.00.00.G22")


async def stored_messages(db: Database, count: int, size: int) -> list[str]:
    """``count`` messages of ``size`` bytes stored through intake's group-committed writer; their ids."""
    writer = IntakeWriter(db)
    await writer.start()
    body = b"x" * size
    ids: list[str] = []
    try:
        for start in range(0, count, 1000):
            chunk = range(start, min(start + 1000, count))
            outcomes = await asyncio.gather(*(writer.submit(submission(n, body)) for n in chunk))
            ids += [o.message_id for o in outcomes]
    finally:
        await writer.aclose()
    return ids


async def measure(count: int, size: int, batch: int) -> None:
    work = Path(tempfile.mkdtemp(prefix="docbus-payload-retention-"))
    url = f"sqlite+aiosqlite:///{work / 'docbus.sqlite3'}"
    await upgrade_async(url)
    db = Database(url)
    try:
        ids = await stored_messages(db, count, size)
        for start in range(0, len(ids), 1000):
            chunk = ids[start : start + 1000]
            async with db.transaction() as conn:
                await conn.execute(
                    update(outbox).where(outbox.c.message_id.in_(chunk)).values(published_at=datetime.now(UTC))
                )
                await append_events_in(
                    conn, [NewEvent(mid, "DELIVERED", actor="bench", destination="national") for mid in chunk]
                )

        durations = timed_transactions(db)
        retention = PayloadRetention(
            db, DirectoryPayloadStore(work / "payloads"), ROUTES, frozenset, retention_seconds=86400, batch=batch
        )
        started = time.perf_counter()
        report = await retention.purge_once(now=datetime.now(UTC) + timedelta(days=2))
        total = time.perf_counter() - started
        print(
            f"payload retention pass: {report.purged} payloads of {size} B deleted ({report.kept} kept) in "
            f"{total:.2f} s; {summary(durations, batch)}"
        )
    finally:
        await db.dispose()
        shutil.rmtree(work, ignore_errors=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--messages", type=int, default=100_000)
    parser.add_argument("--size", type=int, default=10 * 1024)
    parser.add_argument("--batch", type=int, default=100)
    args = parser.parse_args()
    asyncio.run(measure(args.messages, args.size, args.batch))


if __name__ == "__main__":
    main()
