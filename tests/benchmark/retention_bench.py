"""How long the embedded log's retention holds SQLite's write lock: publishes N records of SIZE bytes through
``EmbeddedBroker`` into a fresh SQLite file, has one group commit them all, then times one retention pass and
each of its delete transactions (intake's group commits wait for at most one of them).

    python tests/benchmark/retention_bench.py [--records 100000] [--size 10240] [--batch 200]
"""

from __future__ import annotations

import argparse
import asyncio
import shutil
import tempfile
import time
from pathlib import Path

from transaction_timing import summary, timed_transactions  # beside this script

from docbus.broker import EmbeddedBroker, OutgoingRecord
from docbus.broker.embedded_retention import EmbeddedLogRetention
from docbus.broker.embedded_sql import now_ms
from docbus.store.database import Database
from docbus.store.migrate import upgrade_async

TOPIC = "docbus.agency.bench"


async def measure(records: int, size: int, batch: int) -> None:
    work = Path(tempfile.mkdtemp(prefix="docbus-retention-"))
    url = f"sqlite+aiosqlite:///{work / 'docbus.sqlite3'}"
    await upgrade_async(url)
    db = Database(url)
    try:
        broker = EmbeddedBroker(db)
        value = b"x" * size
        for start in range(0, records, 500):
            end = min(start + 500, records)
            await broker.publish([OutgoingRecord(TOPIC, f"k{i}".encode(), value) for i in range(start, end)])
        async with broker.consumer("bench", topics=[TOPIC]) as consumer:
            read = 0
            while read < records:
                got = await consumer.poll(max_records=5000, timeout=1)
                read += len(got)
                await consumer.commit(got)

        durations = timed_transactions(db)
        started = time.perf_counter()
        report = await EmbeddedLogRetention(db, retention_seconds=3600, batch=batch).trim_once(now=now_ms() + 7_200_000)
        total = time.perf_counter() - started
        print(
            f"retention pass: {report.total} records of {size} B deleted in {total:.2f} s; {summary(durations, batch)}"
        )
    finally:
        await db.dispose()
        shutil.rmtree(work, ignore_errors=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--records", type=int, default=100_000)
    parser.add_argument("--size", type=int, default=10 * 1024)
    parser.add_argument("--batch", type=int, default=200)
    args = parser.parse_args()
    asyncio.run(measure(args.records, args.size, args.batch))


if __name__ == "__main__":
    main()
