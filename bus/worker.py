"""The worker role (``docbus worker``): sweeps the outbox into the broker; adapters run here as well.

Gateways publish what they commit at once; a worker publishes what they could not (a gateway crashed after its
commit, or the broker was down). Any number of workers can run against one PostgreSQL: each outbox row is
claimed by one relay at a time.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import signal

from docbus.broker import broker_from_settings
from docbus.gateway.state import instance_name
from docbus.relay import OutboxRelay
from docbus.settings import Settings
from docbus.store.database import Database

log = logging.getLogger(__name__)


async def run_worker(settings: Settings, stop: asyncio.Event | None = None) -> None:
    """Run until ``stop`` is set (or SIGTERM/SIGINT arrives)."""
    stop = stop or asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        with contextlib.suppress(NotImplementedError, RuntimeError):
            loop.add_signal_handler(sig, stop.set)
    db = Database.from_settings(settings)
    broker = broker_from_settings(settings, db)
    relay = OutboxRelay(
        db,
        broker,
        owner=instance_name("worker"),
        lease_seconds=settings.relay_lease_seconds,
        sweep_interval=settings.relay_sweep_interval_seconds,
        batch_size=settings.relay_batch_size,
        sweep=True,
    )
    await broker.start()
    await relay.start()
    log.info("worker %s running", relay.owner)
    try:
        await stop.wait()
    finally:
        await relay.aclose()
        await broker.aclose()
        await db.dispose()
