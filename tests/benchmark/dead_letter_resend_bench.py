"""How fast a bulk resend puts dead letters back, and how long it holds SQLite's write lock: stores N messages
of SIZE bytes in a fresh SQLite file, makes each a dead letter of one destination, then times one
``resend_waiting`` and each of its write transactions (intake's group commits wait for at most one of them).
The records go to the embedded log in the same file, or with ``--kafka`` to a real Kafka.

    python tests/benchmark/dead_letter_resend_bench.py [--messages 10000] [--size 10240] [--kafka HOST:PORT]
"""

from __future__ import annotations

import argparse
import asyncio
import shutil
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path

from payload_retention_bench import stored_messages  # beside this script
from sqlalchemy import insert
from transaction_timing import summary, timed_transactions

from docbus.broker import Broker, EmbeddedBroker, KafkaBroker
from docbus.delivery.dead_letters import RESEND_BATCH, DeadLetterStore
from docbus.store.database import Database
from docbus.store.migrate import upgrade_async
from docbus.store.tables import dead_letters
from docbus.topics import Topics


async def measure(count: int, size: int, kafka: str | None) -> None:
    work = Path(tempfile.mkdtemp(prefix="docbus-dlq-resend-"))
    url = f"sqlite+aiosqlite:///{work / 'docbus.sqlite3'}"
    await upgrade_async(url)
    db = Database(url)
    broker: Broker = KafkaBroker(kafka) if kafka else EmbeddedBroker(db)
    topics = Topics(f"bench{int(time.time())}")
    try:
        ids = await stored_messages(db, count, size)
        now = datetime.now(UTC)
        for start in range(0, len(ids), 1000):
            async with db.transaction() as conn:
                await conn.execute(
                    insert(dead_letters),
                    [
                        {
                            "message_id": mid,
                            "destination": "national",
                            "receivers": '["000.00.00.H41"]',
                            "reason": "refused for good",
                            "attempts": "[]",
                            "created_at": now,
                        }
                        for mid in ids[start : start + 1000]
                    ],
                )
        await broker.start()
        await broker.ensure_topics([topics.resend("national")])
        durations = timed_transactions(db)
        started = time.perf_counter()
        outcome = await DeadLetterStore(db, broker, topics).resend_waiting("national", actor="bench")
        total = time.perf_counter() - started
        where = f"Kafka at {kafka}" if kafka else "the embedded log"
        print(
            f"bulk resend to {where}: {len(outcome.resent)} dead letters of {size} B put back in {total:.2f} s "
            f"({len(outcome.resent) / total:.0f}/s, {outcome.remaining} left); "
            f"write {summary(durations, RESEND_BATCH)}"
        )
    finally:
        await broker.aclose()
        await db.dispose()
        shutil.rmtree(work, ignore_errors=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--messages", type=int, default=10_000)
    parser.add_argument("--size", type=int, default=10 * 1024)
    parser.add_argument("--kafka", help="bootstrap servers of a Kafka to publish to (default: the embedded log)")
    args = parser.parse_args()
    asyncio.run(measure(args.messages, args.size, args.kafka))


if __name__ == "__main__":
    main()
