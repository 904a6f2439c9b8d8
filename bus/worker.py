"""The worker role (``docbus worker``): sweeps the outbox into the broker and forwards to the destinations.

Gateways publish what they commit at once; workers publish what they could not (a gateway crashed after its
commit, or the broker was down), run one consumer per destination, match receipts and fetch them from the axes.
Any number of workers can run against one PostgreSQL and one Kafka: outbox rows are claimed by one relay at a
time, and each destination's consumer group shares its partitions among the workers.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import signal

from docbus.delivery.node import DeliveryNode
from docbus.heap import settle_heap
from docbus.runtime import BusRuntime
from docbus.settings import Settings

log = logging.getLogger(__name__)


async def run_worker(settings: Settings, stop: asyncio.Event | None = None) -> None:
    """Run until ``stop`` is set (or SIGTERM/SIGINT arrives)."""
    stop = stop or asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        with contextlib.suppress(NotImplementedError, RuntimeError):
            loop.add_signal_handler(sig, stop.set)
    runtime = BusRuntime.build(settings, sweep=True)
    await runtime.start()
    delivery = DeliveryNode(runtime)
    await delivery.start()
    settle_heap()
    log.info("worker %s running with destinations %s", runtime.relay.owner, sorted(delivery.workers))
    try:
        await stop.wait()
    finally:
        await delivery.aclose()
        await runtime.aclose()
