"""Batched timeline writes for workers: delivery events are many and small, and one transaction per event
would make the database, not the destinations, the limit of forwarding."""

from __future__ import annotations

import asyncio
import contextlib
import logging

from docbus.store.messages import MessageStore, NewEvent

log = logging.getLogger(__name__)


class EventRecorder:
    """Queues events and appends them in batches, in order; ``flush`` waits until all queued are stored."""

    def __init__(self, messages: MessageStore, *, max_batch: int = 500) -> None:
        self._messages = messages
        self._max_batch = max_batch
        self._queue: asyncio.Queue[NewEvent] = asyncio.Queue()
        self._task: asyncio.Task[None] | None = None

    async def start(self) -> None:
        if self._task is None:
            self._task = asyncio.create_task(self._run(), name="docbus-event-recorder")

    def record(self, event: NewEvent) -> None:
        self._queue.put_nowait(event)

    async def flush(self) -> None:
        await self._queue.join()

    async def aclose(self) -> None:
        if self._task is None:
            return
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self.flush(), timeout=10)
        self._task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await self._task
        self._task = None

    async def _run(self) -> None:
        while True:
            batch = [await self._queue.get()]
            while len(batch) < self._max_batch and not self._queue.empty():
                batch.append(self._queue.get_nowait())
            try:
                for attempt in range(20):
                    try:
                        await self._messages.append_events(batch)
                        break
                    except Exception:
                        log.exception("could not store %d events (attempt %d)", len(batch), attempt + 1)
                        await asyncio.sleep(min(5.0, 0.1 * 2**attempt))
            finally:
                for _ in batch:
                    self._queue.task_done()
