"""What the embedded broker and its consumers share: upserts for both dialects, header encoding, the
in-process publish signal, and the translation of database failures into :class:`BrokerUnavailable`."""

from __future__ import annotations

import asyncio
import base64
import contextlib
import time
import weakref
from collections.abc import AsyncIterator
from typing import Any

import orjson
from sqlalchemy import Table
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.exc import DBAPIError, InterfaceError, OperationalError
from sqlalchemy.ext.asyncio import AsyncConnection

from docbus.broker.base import BrokerUnavailable, Headers
from docbus.store.database import Database


def now_ms() -> int:
    return time.time_ns() // 1_000_000


def dialect_insert(conn: AsyncConnection, table: Table) -> Any:
    """An INSERT that knows ``ON CONFLICT`` on both SQLite and PostgreSQL."""
    if conn.dialect.name == "postgresql":
        return postgresql.insert(table)
    return sqlite.insert(table)


def encode_headers(headers: Headers) -> str | None:
    if not headers:
        return None
    return orjson.dumps([[name, base64.b64encode(value).decode("ascii")] for name, value in headers]).decode()


def decode_headers(stored: str | None) -> Headers:
    if not stored:
        return ()
    return tuple((str(name), base64.b64decode(value)) for name, value in orjson.loads(stored))


@contextlib.asynccontextmanager
async def database_bound(what: str, seconds: float) -> AsyncIterator[None]:
    """Run a block against the database within ``seconds``; an outage becomes :class:`BrokerUnavailable`."""
    try:
        async with asyncio.timeout(seconds):
            yield
    except TimeoutError as exc:
        raise BrokerUnavailable(f"{what}: the database did not answer within {seconds:g} s") from exc
    except (OperationalError, InterfaceError, OSError) as exc:
        raise BrokerUnavailable(f"{what}: the database is unavailable ({exc})") from exc
    except DBAPIError as exc:
        if exc.connection_invalidated:
            raise BrokerUnavailable(f"{what}: the database connection was lost ({exc})") from exc
        raise


class PublishSignal:
    """Wakes consumers in this process as soon as a publish commits; other processes find it on their next look."""

    def __init__(self) -> None:
        self.version = 0
        self._event = asyncio.Event()

    def fire(self) -> None:
        self.version += 1
        self._event.set()
        self._event = asyncio.Event()

    async def wait(self, seen: int, seconds: float) -> None:
        """Return after a publish newer than version ``seen``, or after ``seconds``."""
        if self.version != seen or seconds <= 0:
            return
        event = self._event
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(seconds):
                await event.wait()


_signals: weakref.WeakKeyDictionary[Database, PublishSignal] = weakref.WeakKeyDictionary()


def signal_for(db: Database) -> PublishSignal:
    """The signal shared by every embedded broker of this process on ``db``."""
    signal = _signals.get(db)
    if signal is None:
        signal = _signals[db] = PublishSignal()
    return signal
