"""Batched timeline writes for workers: delivery events are many and small, and one transaction per event
would make the database, not the destinations, the limit of forwarding.

A batch the database keeps refusing (it is away longer than the retries last) is not stored; the recorder then
counts a failure, and a consumer that recorded events since its ``mark()`` learns it from ``flush(since=...)``,
which raises. The consumer does not commit its offsets, re-reads the records and records the events again: a
failure costs a second delivery attempt (which destinations deduplicate), never a lost event.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging

from docbus.store.messages import MessageStore, NewEvent

log = logging.getLogger(__name__)

STORE_ATTEMPTS = 20  # with the pauses below, a batch is tried for about 75 s


class EventsNotStored(RuntimeError):
    """Some events recorded since the caller's mark could not be stored."""


class EventRecorder:
    """Queues events and appends them in batches, in order; ``flush`` waits until those queued before it are
    handled (not until the queue is empty: under steady load it seldom is)."""

    def __init__(self, messages: MessageStore, *, max_batch: int = 500) -> None:
        self._messages = messages
        self._max_batch = max_batch
        self._queue: asyncio.Queue[NewEvent] = asyncio.Queue()
        self._task: asyncio.Task[None] | None = None
        self._failures = 0  # batches given up on, ever
        self._recorded = 0  # events queued, ever
        self._handled = 0  # events stored or given up on, ever (in queue order)
        self._progress = asyncio.Event()  # set (and replaced) whenever a batch has been handled

    async def start(self) -> None:
        if self._task is None:
            self._task = asyncio.create_task(self._run(), name="docbus-event-recorder")

    def record(self, event: NewEvent) -> None:
        self._recorded += 1
        self._queue.put_nowait(event)

    def mark(self) -> int:
        """A token for :meth:`flush`: take it before recording the events a flush must vouch for."""
        return self._failures

    async def flush(self, since: int | None = None) -> None:
        """Wait until every event recorded so far was handled; with ``since`` (a :meth:`mark`), raise
        :class:`EventsNotStored` if any batch was given up on after it. It may be another caller's batch: a
        spurious failure only means records are processed twice."""
        target = self._recorded
        while self._handled < target:
            await self._progress.wait()
        if since is not None and self._failures > since:
            raise EventsNotStored(f"{self._failures - since} batch(es) of events could not be stored")

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
                for attempt in range(STORE_ATTEMPTS):
                    try:
                        await self._messages.append_events(batch)
                        break
                    except Exception:
                        log.exception("could not store %d events (attempt %d)", len(batch), attempt + 1)
                        if attempt + 1 < STORE_ATTEMPTS:
                            await asyncio.sleep(min(5.0, 0.1 * 2**attempt))
                else:
                    self._failures += 1
                    log.error("gave up storing %d events; their records will be processed again", len(batch))
            finally:
                self._handled += len(batch)
                progress, self._progress = self._progress, asyncio.Event()
                progress.set()
