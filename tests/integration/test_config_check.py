"""``docbus config check|show`` against a real PostgreSQL and a real Kafka, and the ways a deployment goes wrong:
a wrong password, an unreachable broker, an adapter not installed or missing a secret, a database a newer docbus
migrated. Also: a setting that does not validate is one line naming it, not a stack trace."""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
from pathlib import Path

import asyncpg
import orjson
import pytest

from docbus.simulators import SimulatorConfig, create_app, serve
from docbus.store.migrate import head_revision, upgrade_async

from ..conftest import free_port, fresh_postgres_database, require_service

ROUTES = """
[[destination]]
name = "national"
adapter = "national_axis"

[[destination]]
name = "archive"
adapter = "{archive_adapter}"

[[rule]]
destination = "national"
any = true
"""


def docbus(env: dict[str, str], *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "docbus.cli", *args], env=env, capture_output=True, text=True, timeout=120
    )


def findings(out: str) -> dict[str, dict[str, str]]:
    return {f["part"]: f for f in (orjson.loads(line) for line in out.splitlines())}


@pytest.fixture
def base_env(tmp_path: Path) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("DOCBUS_") or k.startswith("DOCBUS_TEST_")}
    env["DOCBUS_DATA_DIR"] = str(tmp_path / "data")
    return env


async def test_a_sound_deployment_passes_and_what_is_wrong_is_named(tmp_path: Path, base_env: dict[str, str]) -> None:
    url = await fresh_postgres_database()
    await upgrade_async(url)
    bootstrap = require_service("DOCBUS_TEST_KAFKA_BOOTSTRAP", "Apache Kafka")
    routes = tmp_path / "routes.toml"
    routes.write_text(ROUTES.format(archive_adapter="file"))
    (tmp_path / "archive").mkdir()
    # The national axis is the simulator: the probe signs one call that changes nothing there.
    async with serve(create_app("national-axis", SimulatorConfig(secret="s3cr3t-value"))) as axis_url:
        env = {
            **base_env,
            "DOCBUS_DATABASE_URL": url,
            "DOCBUS_KAFKA_BOOTSTRAP": bootstrap,
            "DOCBUS_ROUTES_FILE": str(routes),
            "DOCBUS_ADAPTERS__NATIONAL__URL": axis_url,
            "DOCBUS_ADAPTERS__NATIONAL__SYSTEM_ID": "docbus",
            "DOCBUS_ADAPTERS__NATIONAL__SECRET": "s3cr3t-value",
            "DOCBUS_ADAPTERS__ARCHIVE__DIRECTORY": str(tmp_path / "archive"),
        }
        assert (await asyncio.to_thread(docbus, env, "signing-key", "rotate")).returncode == 0

        sound = await asyncio.to_thread(docbus, env, "config", "check", "--json")
        assert sound.returncode == 0, sound.stdout + sound.stderr
        found = findings(sound.stdout)
        assert {f["verdict"] for f in found.values()} == {"ok"}, found
        assert f"at revision {head_revision()} (the newest)" in found["database"]["detail"]
        assert "docbus:***@" in found["database"]["detail"]  # the password is not printed
        assert "1 broker(s)" in found["broker"]["detail"]
        national = found["destination national"]["detail"]
        assert "NationalAxisAdapter" in national and "reached 127.0.0.1:" in national
        assert national.endswith("signed in as docbus (0 waiting for it)"), national
        assert "FileAdapter" in found["destination archive"]["detail"]

        wrong_secret = {**env, "DOCBUS_ADAPTERS__NATIONAL__SECRET": "not-the-secret"}
        refused = await asyncio.to_thread(docbus, wrong_secret, "config", "check", "--json")
        assert refused.returncode == 1
        national_refused = findings(refused.stdout)["destination national"]
        assert national_refused["verdict"] == "fail", national_refused
        assert "it refused docbus' SYSTEM_ID and SECRET" in national_refused["detail"]
        assert "15" in national_refused["detail"] and "not-the-secret" not in refused.stdout
    gone = findings(docbus(env, "config", "check", "--json").stdout)["destination national"]
    assert gone["verdict"] == "warn" and "cannot connect: Connection refused" in gone["detail"], gone

    shown = docbus(env, "config", "show", "--json")
    assert shown.returncode == 0
    settings = orjson.loads(shown.stdout)
    assert settings["DOCBUS_ADAPTERS__NATIONAL__SECRET"] == "********"
    assert settings["DOCBUS_KAFKA_BOOTSTRAP"] == bootstrap
    assert "s3cr3t-value" not in shown.stdout and ":docbus@" not in shown.stdout

    # Now break one thing of each kind.
    routes.write_text(ROUTES.format(archive_adapter="tape_robot"))
    broken = {
        **env,
        "DOCBUS_DATABASE_URL": url.replace("docbus:docbus@", "docbus:wrong@"),
        "DOCBUS_KAFKA_BOOTSTRAP": f"127.0.0.1:{free_port()}",
    }
    del broken["DOCBUS_ADAPTERS__NATIONAL__SECRET"]
    failed = docbus(broken, "config", "check", "--json", "--timeout", "3")
    assert failed.returncode == 1
    found = findings(failed.stdout)
    assert found["database"]["verdict"] == "fail" and "password" in found["database"]["detail"].lower()
    assert found["broker"]["verdict"] == "fail"
    assert found["destination national"]["verdict"] == "fail" and "secret" in found["destination national"]["detail"]
    assert found["destination archive"]["verdict"] == "fail"
    assert "no such adapter" in found["destination archive"]["detail"]
    assert "wrong" not in failed.stdout

    # A database a newer docbus has migrated.
    admin = await asyncpg.connect(url.replace("postgresql+asyncpg://", "postgresql://"))
    try:
        await admin.execute("UPDATE alembic_version SET version_num = 'f00dfacefeed'")
    finally:
        await admin.close()
    newer = docbus({**base_env, "DOCBUS_DATABASE_URL": url}, "config", "check", "--json")
    assert newer.returncode == 1
    assert "does not know: a newer docbus migrated it" in findings(newer.stdout)["database"]["detail"]


def test_an_unreadable_setting_is_one_line_naming_it(base_env: dict[str, str]) -> None:
    env = {**base_env, "DOCBUS_MAX_BODY_BYTES": "lots", "DOCBUS_INFLIGHT_BODY_BYTES": "1"}
    answer = docbus(env, "agency", "list")
    assert answer.returncode == 2
    assert "Traceback" not in answer.stderr
    assert "error: DOCBUS_MAX_BODY_BYTES: Input should be a valid integer" in answer.stderr
    assert "(got 'lots')" in answer.stderr
    secret = docbus({**base_env, "DOCBUS_ADAPTERS": "not-json-s3cr3t"}, "config", "check")
    assert secret.returncode == 2 and "s3cr3t" not in secret.stderr


def test_an_empty_folder_is_ready_to_start(base_env: dict[str, str]) -> None:
    """The embedded default before its first start: nothing exists yet and nothing fails; nothing is created."""
    answer = docbus(base_env, "config", "check")
    assert answer.returncode == 0, answer.stdout + answer.stderr
    assert "warn  signing key" in answer.stdout and "warn  routes" in answer.stdout
    assert not Path(base_env["DOCBUS_DATA_DIR"]).exists()


def test_a_database_url_docbus_cannot_use_is_named(base_env: dict[str, str]) -> None:
    for url, complaint in (
        ("postgresql://docbus:pa55word@127.0.0.1:1/docbus", "postgresql+asyncpg://"),
        ("no url at all pa55word", "not a database URL"),
    ):
        answer = docbus({**base_env, "DOCBUS_DATABASE_URL": url}, "config", "check", "--json")
        assert answer.returncode == 1
        database = findings(answer.stdout)["database"]
        assert database["verdict"] == "fail" and complaint in database["detail"]
        assert "pa55word" not in answer.stdout + answer.stderr


def test_damaged_retired_keys_fail_the_check(base_env: dict[str, str]) -> None:
    """A gateway still starts (receipts verify with the current key); the check must say what is missing."""
    for _ in range(2):
        assert docbus(base_env, "signing-key", "rotate").returncode == 0
    retired = Path(base_env["DOCBUS_DATA_DIR"]) / "keys" / "receipt-signing.pem.retired.json"
    retired.write_text('{"keys": "damaged"}')
    answer = docbus(base_env, "config", "check", "--json")
    assert answer.returncode == 1
    finding = findings(answer.stdout)["signing key"]
    assert finding["verdict"] == "fail" and "not a key set" in finding["detail"]
