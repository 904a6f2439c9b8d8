"""Fixtures shared by every test: databases (SQLite and a real PostgreSQL), a real gateway on loopback, agencies.

PostgreSQL comes from ``DOCBUS_TEST_POSTGRES_URL`` (the test command starts one with deploy/postgres). When it
is missing the PostgreSQL tests fail under CI and are skipped on a developer's machine.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import socket
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from pathlib import Path

import httpx
import pytest
import uvicorn

from docbus.settings import Settings
from docbus.store.agencies import AgencyDirectory, Role
from docbus.store.database import Database
from docbus.store.migrate import upgrade_async

REPO = Path(__file__).resolve().parents[1]
SAMPLES = Path(os.environ.get("DOCBUS_SAMPLES_DIR", REPO.parent / "shared" / "samples" / "edxml"))
IN_CI = bool(os.environ.get("CI"))


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def require_service(env_var: str, what: str) -> str:
    value = os.environ.get(env_var)
    if value:
        return value
    message = f"{what} is not available: set {env_var} (the test command does)"
    if IN_CI:
        pytest.fail(message)
    pytest.skip(message)


@pytest.fixture(scope="session")
def samples() -> Path:
    assert SAMPLES.is_dir(), f"sample packets not found at {SAMPLES}"
    return SAMPLES


async def fresh_postgres_database() -> str:
    """Create an empty database on the test server and return its URL (each test gets its own)."""
    import asyncpg

    base = require_service("DOCBUS_TEST_POSTGRES_URL", "PostgreSQL")
    name = "t_" + uuid.uuid4().hex[:16]
    admin = await asyncpg.connect(base.replace("postgresql+asyncpg://", "postgresql://"))
    try:
        await admin.execute(f'CREATE DATABASE "{name}"')
    finally:
        await admin.close()
    return base.rsplit("/", 1)[0] + "/" + name


@pytest.fixture(params=["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)])
async def database_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    if request.param == "sqlite":
        return f"sqlite+aiosqlite:///{tmp_path / 'docbus.sqlite3'}"
    return await fresh_postgres_database()


@pytest.fixture
async def db(database_url: str) -> AsyncIterator[Database]:
    await upgrade_async(database_url)
    database = Database(database_url)
    yield database
    await database.dispose()


@dataclass
class RunningGateway:
    """A real docbus gateway served by uvicorn on a loopback port, in this test's event loop."""

    base_url: str
    settings: Settings
    db: Database
    directory: AgencyDirectory
    keys: dict[str, str] = field(default_factory=dict)

    async def register(self, organ_id: str, role: Role = Role.AGENCY, name: str | None = None) -> str:
        _, key = await self.directory.add(organ_id, name=name or f"Agency {organ_id}", role=role)
        self.keys[organ_id] = key
        return key

    def client(self, organ_id: str | None = None) -> httpx.AsyncClient:
        headers = {"Authorization": f"Bearer {self.keys[organ_id]}"} if organ_id else {}
        return httpx.AsyncClient(base_url=self.base_url, headers=headers, timeout=30)


async def start_gateway(
    settings: Settings, *, port: int | None = None
) -> tuple[uvicorn.Server, asyncio.Task[None], str]:
    from docbus.gateway.app import create_app

    port = port or free_port()
    config = uvicorn.Config(
        create_app(settings), host="127.0.0.1", port=port, log_level="warning", lifespan="on", loop="none"
    )
    server = uvicorn.Server(config)
    task = asyncio.create_task(server.serve())
    for _ in range(500):
        if server.started:
            break
        if task.done():
            task.result()
        await asyncio.sleep(0.01)
    assert server.started, "gateway did not start"
    return server, task, f"http://127.0.0.1:{port}"


@pytest.fixture
def gateway_settings(tmp_path: Path, database_url: str) -> Settings:
    return Settings(data_dir=tmp_path / "data", database_url=database_url, max_body_bytes=2 * 1024 * 1024)


@contextlib.asynccontextmanager
async def running_gateway(settings: Settings) -> AsyncIterator[RunningGateway]:
    """A gateway on ``settings``' database, brought to the newest schema first; stopped at the end."""
    url = settings.resolved_database_url()
    await upgrade_async(url, tls=settings.database_tls())
    server, task, base = await start_gateway(settings)
    database = Database(url, tls=settings.database_tls())
    try:
        yield RunningGateway(base, settings, database, AgencyDirectory(database, cache_seconds=0))
    finally:
        server.should_exit = True
        await task
        await database.dispose()


@pytest.fixture
async def gateway(gateway_settings: Settings) -> AsyncIterator[RunningGateway]:
    async with running_gateway(gateway_settings) as running:
        yield running


@pytest.fixture
def sample_bytes(samples: Path) -> dict[str, bytes]:
    return {p.name: p.read_bytes() for p in sorted(samples.glob("*.edxml"))}
