"""Engines for the store: SQLite (WAL, fsync on every commit) by default, PostgreSQL when the URL names it.

SQLite allows one writer at a time, so writes go through a connection that opens its transactions with
``BEGIN IMMEDIATE`` (the write lock is taken up front; no deadlock when a read turns into a write), while reads use
ordinary deferred transactions that WAL lets run beside the writer. PostgreSQL needs no such split.

Several processes (gateway workers, ``docbus worker``) may share one SQLite file. SQLite's own busy handler makes a
waiting writer sleep in growing steps (up to 100 ms), which turns a short wait for the lock into a long one; so
writers also take an advisory file lock next to the database first, and the kernel wakes the next waiter the moment
the lock is free (``Database.transaction``).
"""

from __future__ import annotations

import asyncio
import contextlib
import fcntl
import logging
import os
import sqlite3
from collections.abc import AsyncIterator
from typing import Any, cast

from sqlalchemy import create_engine, event, make_url, text
from sqlalchemy.engine import Connection, Engine
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine, create_async_engine

from docbus.settings import Settings
from docbus.store.database_tls import DatabaseTls, postgres_connect_args

log = logging.getLogger(__name__)


class Database:
    """The async engines one process uses: ``writer`` for transactions that write, ``reader`` for queries."""

    def __init__(self, url: str, *, pool_size: int = 10, tls: DatabaseTls | None = None) -> None:
        """``tls``: PostgreSQL over TLS, the server's certificate checked, a client certificate shown if given
        (see ``docbus.store.database_tls``)."""
        self.url = url
        self.is_sqlite = url.startswith("sqlite")
        if self.is_sqlite:
            # A SQLite file is written through ``_inline_writer`` (see ``transaction``); this engine serves only a
            # database without a file, with one connection so that its writers queue in asyncio.
            self.writer = create_async_engine(url, pool_size=1, max_overflow=0, pool_timeout=120)
            self.reader = create_async_engine(url, pool_size=pool_size, max_overflow=pool_size)
            for engine, immediate in ((self.writer, True), (self.reader, False)):
                _configure_sqlite(engine, immediate=immediate)
            database = make_url(url).database
            on_file = bool(database) and database != ":memory:"
            self._file_lock = _WriteFileLock(f"{database}-writelock") if on_file else None
            self._inline_writer: Engine | None = None
            self._inline_reader: Engine | None = None
            self._sqlite_file: str | None = str(database) if on_file else None
            if on_file:
                # Write transactions on a SQLite file run on the event loop's own thread (see ``transaction``),
                # and so do short reads on the forwarding path (see ``reading``).
                self._inline_writer = _inline_engine(url, connections=1, immediate=True)
                self._inline_reader = _inline_engine(url, connections=10, immediate=False)
        else:
            self.writer = create_async_engine(
                url,
                pool_size=pool_size,
                max_overflow=pool_size,
                pool_pre_ping=True,
                connect_args=postgres_connect_args(url, tls),
            )
            self.reader = self.writer
            self._file_lock = None
            self._inline_writer = None
            self._inline_reader = None
            self._sqlite_file = None
        self._plain_writer: sqlite3.Connection | None = None

    @contextlib.asynccontextmanager
    async def transaction(self) -> AsyncIterator[AsyncConnection]:
        """A write transaction, committed on success: the one way code in this package writes.

        On a SQLite file it first takes the cross-process write lock, so another process' writer waits in the
        kernel rather than in SQLite's sleeping busy handler."""
        if self._file_lock is None or self._inline_writer is None:
            async with self.writer.begin() as conn:
                yield conn
            return
        # Inline, not through the async driver: there every statement is a round trip to a helper thread whose
        # return waits for the event loop (and the GIL) while the write lock is held, and a busy process kept the
        # lock for tens of milliseconds a transaction; the other processes waited all that time.
        async with self._file_lock.held():
            with self._inline_writer.begin() as conn:
                yield cast(AsyncConnection, InlineConnection(conn))

    @property
    def on_sqlite_file(self) -> bool:
        """Whether this is a SQLite file, which ``plain_transaction`` writes."""
        return self._sqlite_file is not None

    @contextlib.asynccontextmanager
    async def plain_transaction(self) -> AsyncIterator[sqlite3.Connection]:
        """A write transaction on a SQLite file, on a sqlite3 connection of its own, without SQLAlchemy.

        For intake's group commit only, whose statements are prebuilt SQL already. At moderate load each request
        is a batch of its own, and SQLAlchemy's part of a transaction (pool check-out and check-in, the begin
        event, transaction objects) was about a sixth of a gateway's CPU. The same cross-process write lock is
        taken first, as for ``transaction``; a connection that failed is closed and opened afresh next time."""
        if self._sqlite_file is None or self._file_lock is None:
            raise RuntimeError("plain transactions are for a SQLite file")
        async with self._file_lock.held():
            conn = self._plain_writer
            if conn is None:
                conn = sqlite3.connect(self._sqlite_file, isolation_level=None, check_same_thread=False)
                _configure_connection(conn)
                self._plain_writer = conn
            try:
                conn.execute("BEGIN IMMEDIATE")
                yield conn
                conn.execute("COMMIT")
            except BaseException:
                self._drop_plain_writer()
                raise

    def _drop_plain_writer(self) -> None:
        conn, self._plain_writer = self._plain_writer, None
        if conn is not None:
            with contextlib.suppress(sqlite3.Error):
                if conn.in_transaction:
                    conn.rollback()
            conn.close()

    @contextlib.asynccontextmanager
    async def reading(self) -> AsyncIterator[AsyncConnection]:
        """A connection for short, bounded reads on a hot path (the relay's claim, a delivery's lookup, ...).

        On a SQLite file the reads run at once on the caller's thread, in one deferred read transaction (a
        snapshot, which WAL never makes wait for a writer). Through the async driver each statement is a round
        trip to a helper thread whose answer waits for the event loop and the GIL: in a busy worker a read of a
        few milliseconds took 30-100 ms there, and the relay made three of them per batch. Reads that may scan
        much (searches, listings) keep using ``reader``, so they never stall the loop."""
        if self._inline_reader is None:
            async with self.reader.connect() as conn:
                yield conn
            return
        with self._inline_reader.connect() as conn:
            yield cast(AsyncConnection, InlineConnection(conn))

    @classmethod
    def from_settings(cls, settings: Settings) -> Database:
        if not settings.database_url:
            settings.data_dir.mkdir(parents=True, exist_ok=True)
        return cls(settings.resolved_database_url(), pool_size=settings.db_pool_size, tls=settings.database_tls())

    async def ping(self) -> None:
        """Raise unless the database answers a trivial query."""
        async with self.reader.connect() as conn:
            await conn.execute(text("SELECT 1"))

    async def dispose(self) -> None:
        self._drop_plain_writer()
        if self._inline_writer is not None:
            self._inline_writer.dispose()
        if self._inline_reader is not None:
            self._inline_reader.dispose()
        await self.writer.dispose()
        if self.reader is not self.writer:
            await self.reader.dispose()
        if self._file_lock is not None:
            self._file_lock.close()


class InlineConnection:
    """A synchronous SQLAlchemy connection behind the part of ``AsyncConnection`` the store uses.

    Each call runs at once on the caller's thread; results are the synchronous ones, which offer the same row
    access (iteration, ``first``, ``scalar``, ``rowcount``)."""

    def __init__(self, conn: Connection) -> None:
        self._conn = conn
        self.dialect = conn.dialect

    @property
    def driver_connection(self) -> sqlite3.Connection:
        """The sqlite3 connection inside this transaction, for prebuilt SQL on hot paths (relay, events, look-ups)."""
        driver = self._conn.connection.driver_connection
        assert isinstance(driver, sqlite3.Connection)
        return driver

    async def execute(self, statement: Any, parameters: Any = None, **kwargs: Any) -> Any:
        return self._conn.execute(statement, parameters, **kwargs)

    async def scalar(self, statement: Any, parameters: Any = None, **kwargs: Any) -> Any:
        return self._conn.scalar(statement, parameters, **kwargs)

    @contextlib.asynccontextmanager
    async def begin_nested(self) -> AsyncIterator[None]:
        with self._conn.begin_nested():
            yield


class _WriteFileLock:
    """An exclusive ``flock`` on a file beside the database, shared by every process that writes to it.

    Within a process an asyncio lock orders the waiters, so only one of them at a time waits for the file lock (on
    a worker thread: the wait blocks). A waiter cancelled while its thread is still waiting keeps the asyncio lock
    until that thread has the file lock and has given it back, so no two waiters of one process ever overlap.
    """

    def __init__(self, path: str) -> None:
        self._path = path
        self._fd: int | None = None
        self._local = asyncio.Lock()

    def _descriptor(self) -> int:
        if self._fd is None:
            self._fd = os.open(self._path, os.O_RDWR | os.O_CREAT, 0o600)
        return self._fd

    @contextlib.asynccontextmanager
    async def held(self) -> AsyncIterator[None]:
        await self._local.acquire()
        fd = self._descriptor()
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)  # free: no trip to a thread
        except BlockingIOError:
            waiting = asyncio.ensure_future(asyncio.to_thread(fcntl.flock, fd, fcntl.LOCK_EX))
            try:
                await asyncio.shield(waiting)
            except BaseException:
                waiting.add_done_callback(lambda done: self._give_back(fd, done))
                raise
        except BaseException:
            self._local.release()
            raise
        try:
            yield
        finally:
            fcntl.flock(fd, fcntl.LOCK_UN)
            self._local.release()

    def _give_back(self, fd: int, done: asyncio.Future[None]) -> None:
        try:
            if not done.cancelled() and done.exception() is None:
                fcntl.flock(fd, fcntl.LOCK_UN)
        finally:
            self._local.release()

    def close(self) -> None:
        if self._fd is not None:
            os.close(self._fd)
            self._fd = None


def _inline_engine(url: str, *, connections: int, immediate: bool) -> Engine:
    """A synchronous engine on the same SQLite file, for use on the event loop's thread (``InlineConnection``)."""
    engine = create_engine(
        make_url(url).set(drivername="sqlite"),
        pool_size=min(connections, 2),
        max_overflow=connections - min(connections, 2),
        connect_args={"check_same_thread": False},
    )
    _configure_sqlite(engine, immediate=immediate)
    return engine


def _configure_sqlite(engine: AsyncEngine | Engine, *, immediate: bool) -> None:
    sync_engine = engine.sync_engine if isinstance(engine, AsyncEngine) else engine

    @event.listens_for(sync_engine, "connect")
    def _on_connect(dbapi_connection: Any, _record: Any) -> None:
        # Let SQLAlchemy's "begin" event issue BEGIN itself (pysqlite's implicit BEGIN is DEFERRED).
        dbapi_connection.isolation_level = None
        _configure_connection(dbapi_connection)

    @event.listens_for(sync_engine, "begin")
    def _on_begin(conn: Connection) -> None:
        conn.exec_driver_sql("BEGIN IMMEDIATE" if immediate else "BEGIN")


def _configure_connection(dbapi_connection: Any) -> None:
    cursor = dbapi_connection.cursor()
    # First, so that every statement below (and after) waits for another process' write lock.
    cursor.execute("PRAGMA busy_timeout=30000")
    # WAL is a property of the file: switching needs the lock, so only when it is not WAL yet.
    cursor.execute("PRAGMA journal_mode")
    if str(cursor.fetchone()[0]).lower() != "wal":
        try:
            cursor.execute("PRAGMA journal_mode=WAL")
        except Exception:  # another connection is switching it this very moment; the file ends up WAL
            log.info("journal mode switch raced with another connection")
    # FULL: every commit is fsync'd before it returns; a 202 must survive power loss.
    cursor.execute("PRAGMA synchronous=FULL")
    cursor.execute("PRAGMA foreign_keys=ON")
    cursor.close()
