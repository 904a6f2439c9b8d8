"""Bring a database to the newest schema with Alembic (called by ``docbus serve|gateway|worker|migrate``)."""

from __future__ import annotations

import asyncio
from pathlib import Path

from alembic import command
from alembic.config import Config
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory
from sqlalchemy.ext.asyncio import AsyncEngine

from docbus.store.database_tls import DatabaseTls

MIGRATIONS_DIR = Path(__file__).resolve().parent.parent / "migrations"


def alembic_config(url: str, *, tls: DatabaseTls | None = None) -> Config:
    config = Config()
    config.set_main_option("script_location", str(MIGRATIONS_DIR))
    config.set_main_option("sqlalchemy.url", url)
    config.attributes["database_tls"] = tls  # PostgreSQL over TLS (docbus.store.database_tls)
    return config


def upgrade(url: str, *, tls: DatabaseTls | None = None) -> None:
    """Migrate synchronously; the env script runs its own event loop, so call this outside of one."""
    command.upgrade(alembic_config(url, tls=tls), "head")


async def upgrade_async(url: str, *, tls: DatabaseTls | None = None) -> None:
    """Migrate from inside a running event loop (tests, app start-up) on a worker thread."""
    await asyncio.to_thread(lambda: upgrade(url, tls=tls))


def head_revision() -> str | None:
    """The newest schema revision this docbus knows."""
    return ScriptDirectory.from_config(alembic_config("")).get_current_head()


async def current_revision(engine: AsyncEngine) -> str | None:
    """The revision the database is at; ``None`` when it holds no docbus schema at all."""
    async with engine.connect() as conn:
        return await conn.run_sync(lambda sync: MigrationContext.configure(sync).get_current_revision())
