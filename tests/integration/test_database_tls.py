"""PostgreSQL over TLS with the server's certificate checked (``DOCBUS_DATABASE_SSL_CA_FILE``): the migrations,
every engine of a running gateway and ``docbus config check`` connect that way; a server whose certificate the CA
did not sign is refused, and the check says so. The test server speaks TLS with a CA of its own (postgres.sh), and
its role ``docbus_cert`` logs in with a client certificate only (``DOCBUS_DATABASE_SSL_CERT_FILE``, ``…_KEY_FILE``)."""

from __future__ import annotations

from pathlib import Path

import pydantic
import pytest
from sqlalchemy import text

from docbus.settings import Settings
from docbus.store.database import Database
from docbus.store.database_tls import DatabaseTls
from docbus.store.migrate import upgrade_async

from ..conftest import fresh_postgres_database, require_service, running_gateway
from ..pki import Pki, make_pki
from .helpers import config_check_finding, with_unique_document_id

pytestmark = pytest.mark.postgres

SENDER = "000.00.00.G22"
DOC = "edoc_with_attachment_dc0bdef0.edxml"
XML = {"Content-Type": "application/xml"}
# Every connection to the test database but the asking one, and whether each is encrypted.
OTHERS_TLS = text(
    "SELECT count(*), bool_and(s.ssl) FROM pg_stat_ssl s JOIN pg_stat_activity a USING (pid)"
    " WHERE a.datname = current_database() AND a.pid <> pg_backend_pid()"
)
MINE_TLS = text("SELECT ssl, version FROM pg_stat_ssl WHERE pid = pg_backend_pid()")


def server_ca() -> Path:
    return Path(require_service("DOCBUS_TEST_POSTGRES_CA_FILE", "PostgreSQL's TLS CA"))


def database_finding(env: dict[str, str], tmp_path: Path) -> dict[str, str]:
    return config_check_finding("database", env, tmp_path / "check")


async def test_a_gateway_with_the_servers_ca_does_everything_over_checked_tls(
    tmp_path: Path, sample_bytes: dict[str, bytes]
) -> None:
    ca = server_ca()
    url = await fresh_postgres_database()
    await upgrade_async(url, tls=DatabaseTls(ca))  # the migrations too
    (tmp_path / "data").mkdir()
    settings = Settings(data_dir=tmp_path / "data", database_url=url, database_ssl_ca_file=ca)
    async with running_gateway(settings) as gateway:
        await gateway.register(SENDER)
        async with gateway.client(SENDER) as client:
            answer = await client.post("/v1/messages", content=with_unique_document_id(sample_bytes[DOC]), headers=XML)
            ready = await client.get("/readyz")
        assert answer.status_code == 202, answer.text
        assert ready.json()["checks"]["database"] == "ok"
        checker = Database(url, tls=DatabaseTls(ca))
        try:
            async with checker.reader.connect() as conn:
                mine = (await conn.execute(MINE_TLS)).one()
                others, all_tls = (await conn.execute(OTHERS_TLS)).one()
        finally:
            await checker.dispose()
    assert mine.ssl is True and mine.version in ("TLSv1.2", "TLSv1.3")
    assert others >= 1 and all_tls is True  # the gateway's own connections, still open in its pool

    # The probe tells a plain connection from an encrypted one (asyncpg alone tries TLS first, checking nothing).
    plain = Database(url + "?ssl=disable")
    try:
        async with plain.reader.connect() as conn:
            assert (await conn.execute(MINE_TLS)).one().ssl is False
    finally:
        await plain.dispose()


async def test_a_server_certificate_from_another_ca_is_refused_and_the_check_says_why(tmp_path: Path) -> None:
    url = await fresh_postgres_database()
    other_ca, _, _ = make_pki(tmp_path / "other")
    stranger = Database(url, tls=DatabaseTls(other_ca))
    try:
        with pytest.raises(Exception, match="certificate verify failed"):
            async with stranger.reader.connect() as conn:
                await conn.execute(text("SELECT 1"))
    finally:
        await stranger.dispose()

    env = {"DOCBUS_DATABASE_URL": url}
    refused = database_finding({**env, "DOCBUS_DATABASE_SSL_CA_FILE": str(other_ca)}, tmp_path)
    assert refused["verdict"] == "fail" and "certificate verify failed" in refused["detail"], refused
    assert "(TLS, CA " in refused["detail"] and "docbus:docbus@" not in refused["detail"]
    trusted = database_finding({**env, "DOCBUS_DATABASE_SSL_CA_FILE": str(server_ca())}, tmp_path)
    assert trusted["verdict"] == "ok", trusted
    missing = database_finding({**env, "DOCBUS_DATABASE_SSL_CA_FILE": str(tmp_path / "none.pem")}, tmp_path)
    assert missing["verdict"] == "fail" and "cannot use the database TLS files" in missing["detail"], missing


def test_the_tls_files_are_for_postgresql_only_and_a_certificate_needs_its_key(tmp_path: Path) -> None:
    with pytest.raises(pydantic.ValidationError, match="database_ssl_ca_file: for a PostgreSQL database_url"):
        Settings(data_dir=tmp_path, database_ssl_ca_file=tmp_path / "ca.pem")
    with pytest.raises(pydantic.ValidationError, match="database_ssl_cert_file and database_ssl_key_file go together"):
        Settings(database_url="postgresql+asyncpg://db/x", database_ssl_cert_file=tmp_path / "c.pem")


def as_certificate_role(url: str) -> str:
    """``url`` for the role that has no password and logs in by its client certificate."""
    return url.replace("://docbus:docbus@", "://docbus_cert@")


async def test_a_client_certificate_logs_docbus_in_where_the_server_asks_for_one(
    tmp_path: Path, sample_bytes: dict[str, bytes]
) -> None:
    ca = server_ca()
    client_cert, client_key = ca.parent / "client.crt", ca.parent / "client.key"
    url = as_certificate_role(await fresh_postgres_database())
    with_certificate = DatabaseTls(ca, client_cert, client_key)
    await upgrade_async(url, tls=with_certificate)
    (tmp_path / "data").mkdir()
    settings = Settings(
        data_dir=tmp_path / "data",
        database_url=url,
        database_ssl_ca_file=ca,
        database_ssl_cert_file=client_cert,
        database_ssl_key_file=client_key,
    )
    async with running_gateway(settings) as gateway:
        await gateway.register(SENDER)
        async with gateway.client(SENDER) as client:
            answer = await client.post("/v1/messages", content=with_unique_document_id(sample_bytes[DOC]), headers=XML)
        assert answer.status_code == 202, answer.text

    without = Database(url, tls=DatabaseTls(ca))  # the role has no password: no certificate, no entry
    try:
        with pytest.raises(Exception, match="connection requires a valid client certificate"):
            async with without.reader.connect() as conn:
                await conn.execute(text("SELECT 1"))
    finally:
        await without.dispose()

    env = {"DOCBUS_DATABASE_URL": url, "DOCBUS_DATABASE_SSL_CA_FILE": str(ca)}
    shown = {"DOCBUS_DATABASE_SSL_CERT_FILE": str(client_cert), "DOCBUS_DATABASE_SSL_KEY_FILE": str(client_key)}
    found = database_finding({**env, **shown}, tmp_path)
    assert found["verdict"] == "ok" and f"client certificate {client_cert}" in found["detail"], found
    refused = database_finding(env, tmp_path)
    assert refused["verdict"] == "fail" and "requires a valid client certificate" in refused["detail"], refused
    stranger_cert, stranger_key = Pki(tmp_path / "stranger", "Another CA").client("c", "docbus_cert")
    other = {"DOCBUS_DATABASE_SSL_CERT_FILE": str(stranger_cert), "DOCBUS_DATABASE_SSL_KEY_FILE": str(stranger_key)}
    refused = database_finding({**env, **other}, tmp_path)
    assert refused["verdict"] == "fail", refused
