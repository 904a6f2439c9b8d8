"""Engines for the store: SQLite (WAL, fsync on every commit) by default, PostgreSQL when the URL names it.

SQLite allows one writer at a time, so writes go through a connection that opens its transactions with
``BEGIN IMMEDIATE`` (the write lock is taken up front; no deadlock when a read turns into a write), while reads use
ordinary deferred transactions that WAL lets run beside the writer. PostgreSQL needs no such split.
"""

from __future__ import annotations

import logging
from typing import Any

from sqlalchemy import event, text
from sqlalchemy.engine import Connection
from sqlalchemy.ext.asyncio import AsyncEngine, create_async_engine

from docbus.settings import Settings

log = logging.getLogger(__name__)


class Database:
    """The async engines one process uses: ``writer`` for transactions that write, ``reader`` for queries."""

    def __init__(self, url: str, *, pool_size: int = 10) -> None:
        self.url = url
        self.is_sqlite = url.startswith("sqlite")
        if self.is_sqlite:
            # One write connection per process: writers (intake, relay, embedded broker, workers) queue for it in
            # asyncio, in order, instead of meeting SQLite's lock and its sleeping busy handler.
            self.writer = create_async_engine(url, pool_size=1, max_overflow=0, pool_timeout=120)
            self.reader = create_async_engine(url, pool_size=pool_size, max_overflow=pool_size)
            for engine, immediate in ((self.writer, True), (self.reader, False)):
                _configure_sqlite(engine, immediate=immediate)
        else:
            self.writer = create_async_engine(
                url, pool_size=pool_size, max_overflow=pool_size, pool_pre_ping=True
            )
            self.reader = self.writer

    @classmethod
    def from_settings(cls, settings: Settings) -> Database:
        if not settings.database_url:
            settings.data_dir.mkdir(parents=True, exist_ok=True)
        return cls(settings.resolved_database_url(), pool_size=settings.db_pool_size)

    async def ping(self) -> None:
        """Raise unless the database answers a trivial query."""
        async with self.reader.connect() as conn:
            await conn.execute(text("SELECT 1"))

    async def dispose(self) -> None:
        await self.writer.dispose()
        if self.reader is not self.writer:
            await self.reader.dispose()


def _configure_sqlite(engine: AsyncEngine, *, immediate: bool) -> None:
    sync_engine = engine.sync_engine

    @event.listens_for(sync_engine, "connect")
    def _on_connect(dbapi_connection: Any, _record: Any) -> None:
        # Let SQLAlchemy's "begin" event issue BEGIN itself (pysqlite's implicit BEGIN is DEFERRED).
        dbapi_connection.isolation_level = None
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

    @event.listens_for(sync_engine, "begin")
    def _on_begin(conn: Connection) -> None:
        conn.exec_driver_sql("BEGIN IMMEDIATE" if immediate else "BEGIN")
