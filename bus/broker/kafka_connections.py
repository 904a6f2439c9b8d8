"""Every connection an aiokafka client opens gets closed, including the ones aiokafka itself loses track of.

aiokafka closes the connections it keeps in its client's table, but not two others:

- the bootstrap connection, a local variable of ``AIOKafkaClient.bootstrap``: when the ``start()`` around it is
  cancelled (a time bound, a shutdown) while it asks that connection for metadata, nothing closes it;
- a connection still being opened when ``close()`` runs: it lands in the table after the table was closed.

Both stay open until the garbage collector finds them (a socket and a reader task each, and a ResourceWarning),
and a bus that retries a broker during an outage makes one on every attempt. So connections opened while a
client starts, and by the tasks it starts, are recorded for their owner (:func:`recording_connections`, a
context variable, which the client's tasks inherit), and :func:`close_leftover_connections` closes whatever of
them, and of the client's table, is still open once the owner has been stopped.
"""

from __future__ import annotations

import asyncio
import contextlib
import contextvars
import weakref
from collections.abc import Awaitable, Callable, Iterator
from typing import Any

import aiokafka.client
from aiokafka.conn import AIOKafkaConnection, CloseReason

_recording: contextvars.ContextVar[weakref.WeakSet[AIOKafkaConnection] | None] = contextvars.ContextVar(
    "docbus_kafka_connections", default=None
)
_by_owner: weakref.WeakKeyDictionary[object, weakref.WeakSet[AIOKafkaConnection]] = weakref.WeakKeyDictionary()


def _recorded(create: Callable[..., Awaitable[AIOKafkaConnection]]) -> Callable[..., Awaitable[AIOKafkaConnection]]:
    async def create_conn(*args: Any, **kwargs: Any) -> AIOKafkaConnection:
        conn = await create(*args, **kwargs)
        ledger = _recording.get()
        if ledger is not None:
            ledger.add(conn)
        return conn

    create_conn.docbus_recorded = True  # type: ignore[attr-defined]
    return create_conn


if not getattr(aiokafka.client.create_conn, "docbus_recorded", False):
    aiokafka.client.create_conn = _recorded(aiokafka.client.create_conn)


@contextlib.contextmanager
def recording_connections(owner: object) -> Iterator[None]:
    """Record for ``owner`` (a producer, consumer or admin client) the connections opened inside the block, and
    later by the tasks started inside it."""
    ledger = _by_owner.setdefault(owner, weakref.WeakSet())
    token = _recording.set(ledger)
    try:
        yield
    finally:
        _recording.reset(token)


async def close_leftover_connections(owner: object, client: Any, *, settle: float = 1.0) -> None:
    """Close what ``owner`` opened and ``client`` (its ``AIOKafkaClient``) still holds.

    Call it once ``owner`` has been stopped or closed: nothing of it should be open any more. A connection still
    being opened then holds the client's connection lock; up to ``settle`` seconds are given for it to land."""
    lock = getattr(client, "_get_conn_lock", None)
    if isinstance(lock, asyncio.Lock) and lock.locked():
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(settle), lock:
                pass
    leftovers = {*_by_owner.pop(owner, ()), *getattr(client, "_conns", {}).values()}
    for conn in leftovers:
        if conn._reader is not None:  # open, even when the broker hung up first (``connected()`` is then False)
            conn.close(reason=CloseReason.SHUTDOWN)
