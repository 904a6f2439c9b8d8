"""The one consume loop every forwarding component uses: poll, process, store events, commit — and on a failure,
rewind to the last commit so the batch is processed again (at-least-once; processing deduplicates)."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable

from docbus.broker.base import BrokerConsumer, BrokerError, ConsumedRecord

log = logging.getLogger(__name__)


async def consume_until(
    stop: asyncio.Event,
    consumer: BrokerConsumer,
    process: Callable[[list[ConsumedRecord]], Awaitable[None]],
    *,
    label: str,
) -> None:
    """Run ``process`` on every polled batch until ``stop`` is set; commit only batches it finished."""
    await consumer.start()
    try:
        while not stop.is_set():
            try:
                records = await consumer.poll(max_records=500, timeout=0.5)
            except BrokerError as exc:
                # Nothing was taken, so there is nothing to rewind: wait for the broker and poll again.
                log.warning("%s: broker unavailable: %s", label, exc)
                await asyncio.sleep(1.0)
                continue
            if not records:
                continue
            try:
                await process(records)
                await consumer.commit(records)
            except asyncio.CancelledError:
                raise
            except Exception:
                log.exception("%s: batch failed; it will be processed again", label)
                await asyncio.sleep(1.0)
                await consumer.seek_to_committed()
    finally:
        await consumer.aclose()
