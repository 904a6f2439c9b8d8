"""Alembic environment: runs the migrations on the async engine docbus is configured with."""

from __future__ import annotations

import asyncio

from alembic import context
from sqlalchemy import pool, text
from sqlalchemy.engine import Connection
from sqlalchemy.ext.asyncio import create_async_engine

from docbus.store.database_tls import postgres_connect_args
from docbus.store.tables import metadata

# Any 64-bit number unique to docbus: PostgreSQL advisory lock that serialises gateways migrating at once.
MIGRATION_LOCK = 0x646F63627573


def _run(connection: Connection) -> None:
    if connection.dialect.name == "postgresql":
        connection.execute(text("SELECT pg_advisory_xact_lock(:k)"), {"k": MIGRATION_LOCK})
    context.configure(connection=connection, target_metadata=metadata, render_as_batch=True)
    with context.begin_transaction():
        context.run_migrations()


async def _run_async(url: str) -> None:
    tls = context.config.attributes.get("database_tls")
    engine = create_async_engine(url, poolclass=pool.NullPool, connect_args=postgres_connect_args(url, tls))
    try:
        async with engine.connect() as connection:
            if connection.dialect.name == "sqlite":
                # The file becomes WAL once, here, before any gateway connects (switching later needs the lock).
                await connection.exec_driver_sql("PRAGMA journal_mode=WAL")
                await connection.commit()
            await connection.run_sync(_run)
            await connection.commit()
    finally:
        await engine.dispose()


url = context.config.get_main_option("sqlalchemy.url")
assert url, "sqlalchemy.url must be set"
asyncio.run(_run_async(url))
