"""The ``docbus`` command as an operator and an agency use it: agencies, send, audit, dead letters, the demo."""

from __future__ import annotations

import os
import signal
import sqlite3
import subprocess
import sys
from pathlib import Path

import orjson
import pytest
from alembic import command as alembic_command

from ..conftest import SAMPLES, free_port
from .test_crash_safety import spawn_gateway, wait_ready

DOC = SAMPLES / "edoc_with_attachment_dc0bdef0.edxml"


def docbus(env: dict[str, str], *args: str, timeout: float = 60) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "docbus.cli", *args], env=env, capture_output=True, text=True, timeout=timeout
    )


@pytest.fixture
def env(tmp_path: Path) -> dict[str, str]:
    values = {**os.environ, "DOCBUS_DATA_DIR": str(tmp_path / "data")}
    for name in ("DOCBUS_DATABASE_URL", "DOCBUS_KAFKA_BOOTSTRAP", "DOCBUS_ROUTES_FILE"):
        values.pop(name, None)
    return values


def test_agency_commands(env: dict[str, str]) -> None:
    added = docbus(env, "agency", "add", "000.00.00.G22", "--name", "Văn phòng Chính phủ")
    assert added.returncode == 0, added.stderr
    key = added.stdout.strip().splitlines()[-1]
    assert key.startswith("dbk_")
    again = docbus(env, "agency", "add", "000.00.00.G22", "--name", "again")
    assert again.returncode == 1
    assert "already registered" in again.stderr
    bad = docbus(env, "agency", "add", "vxp.saas.03", "--name", "test system")
    assert bad.returncode == 1
    assert "vxp.saas.03" in bad.stderr
    operator = docbus(env, "agency", "add", "H41.01", "--name", "Giám sát", "--role", "operator")
    assert operator.returncode == 0
    listed = docbus(env, "agency", "list").stdout
    assert "000.00.00.G22\tagency\tlevel 1" in listed
    assert "H41.01\toperator\tlevel 2" in listed
    assert key not in listed  # keys are shown once, never listed
    rotated = docbus(env, "agency", "rotate-key", "000.00.00.G22").stdout.strip().splitlines()[-1]
    assert rotated.startswith("dbk_")
    assert rotated != key
    overlapping = docbus(env, "agency", "rotate-key", "000.00.00.G22", "--keep-old-for", "2h")
    assert overlapping.returncode == 0, overlapping.stderr
    lines = overlapping.stdout.strip().splitlines()
    assert lines[0].startswith("the old key of 000.00.00.G22 keeps working until ")
    assert lines[-1].startswith("dbk_") and lines[-1] != rotated
    assert "\told key until " in docbus(env, "agency", "list").stdout
    for bad in ("forever", "0h", "31d"):
        refused = docbus(env, "agency", "rotate-key", "000.00.00.G22", "--keep-old-for", bad)
        assert refused.returncode != 0 and "error" in refused.stderr, bad
    suspended = docbus(env, "agency", "suspend", "000.00.00.G22", "--reason", "key leaked")
    assert suspended.returncode == 0, suspended.stderr
    assert "SUSPENDED since " in docbus(env, "agency", "list").stdout
    assert "by operator-cli: key leaked" in docbus(env, "agency", "list").stdout
    assert docbus(env, "agency", "resume", "000.00.00.G22").returncode == 0
    assert "SUSPENDED" not in docbus(env, "agency", "list").stdout
    unknown = docbus(env, "agency", "suspend", "000.00.00.H99", "--reason", "x")
    assert unknown.returncode == 1 and "no agency 000.00.00.H99" in unknown.stderr


def test_reading_commands_create_nothing_and_need_the_current_schema(env: dict[str, str], tmp_path: Path) -> None:
    from docbus.store.migrate import alembic_config

    commands = [("messages", "list"), ("dlq", "list"), ("audit", "verify"), ("flows",), ("log", "groups")]
    data = Path(env["DOCBUS_DATA_DIR"])
    for command in commands:
        missing = docbus(env, *command)
        assert missing.returncode == 1, command
        assert "no docbus database" in missing.stderr and "docbus migrate" in missing.stderr
        assert "Traceback" not in missing.stderr
    assert not data.exists()  # not even the directory

    data.mkdir()
    sqlite3.connect(data / "docbus.sqlite3").close()  # a file, but no schema
    empty = docbus(env, "messages", "list")
    assert (empty.returncode, "holds no docbus schema" in empty.stderr) == (1, True), empty.stderr

    assert docbus(env, "migrate").returncode == 0
    assert docbus(env, "messages", "list").returncode == 0
    alembic_command.downgrade(alembic_config(f"sqlite+aiosqlite:///{data / 'docbus.sqlite3'}"), "-1")
    behind = docbus(env, "dlq", "list")
    assert behind.returncode == 1
    assert "revision" in behind.stderr and "docbus migrate" in behind.stderr

    typo = docbus(env, "messages", "list", "--status", "deliverd")
    assert typo.returncode == 2
    assert "DELIVERED" in typo.stderr  # the choices are shown


@pytest.mark.slow
async def test_send_audit_and_dlq(env: dict[str, str], tmp_path: Path) -> None:
    key = docbus(env, "agency", "add", "000.00.00.G22", "--name", "VPCP").stdout.strip().splitlines()[-1]
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    proc = spawn_gateway(env, port, tmp_path / "gateway.log")
    try:
        await wait_ready(url, proc)
        sent = docbus(env, "send", str(DOC), "--key", key, "--url", url)
        assert sent.returncode == 0, sent.stderr
        receipt = orjson.loads(sent.stdout)
        assert receipt["sender"] == "000.00.00.G22"
        assert receipt["signature"].count(".") == 2
        checked = docbus(env, "send", str(SAMPLES / "edoc.edxml"), "--key", key, "--url", url, "--validate-only")
        assert checked.returncode == 1
        assert orjson.loads(checked.stderr)["status"] == 400
        wrong = docbus(env, "send", str(DOC), "--key", "dbk_wrong", "--url", url)
        assert wrong.returncode == 1
        assert orjson.loads(wrong.stderr)["status"] == 401
    finally:
        proc.send_signal(signal.SIGTERM)
        proc.wait(timeout=30)
    shown = docbus(env, "messages", "show", receipt["message_id"])
    assert orjson.loads(shown.stdout)["events"][0]["type"] == "ACCEPTED"
    assert receipt["message_id"] in docbus(env, "messages", "list").stdout
    flows = orjson.loads(docbus(env, "flows", "--since", "1h", "--json").stdout)
    assert [(s["sender"], s["received"]) for s in flows["senders"]] == [("000.00.00.G22", 1)]
    table = docbus(env, "flows", "--since", "1h")
    assert table.returncode == 0 and "000.00.00.G22" in table.stdout and "outbox:" in table.stdout
    bad_window = docbus(env, "flows", "--since", "last week")
    assert bad_window.returncode == 2 and "since" in bad_window.stderr
    verified = docbus(env, "audit", "verify")
    assert verified.returncode == 0, verified.stdout
    assert "0 problems" in verified.stdout
    with sqlite3.connect(tmp_path / "data" / "docbus.sqlite3") as conn:
        conn.execute("UPDATE events SET actor = 'someone else' WHERE seq = 1")
    tampered = docbus(env, "audit", "verify")
    assert tampered.returncode == 1
    assert "was altered" in tampered.stdout
    assert "1 agencies, 1 directory changes checked: 0 problems" in tampered.stdout
    history = docbus(env, "agency", "history", "000.00.00.G22", "--json")
    assert history.returncode == 0, history.stderr
    (registered,) = [orjson.loads(line) for line in history.stdout.splitlines()]
    assert (registered["seq"], registered["action"], registered["actor"]) == (1, "registered", "operator-cli")
    assert registered["detail"]["name"] and "key_prefix" in registered["detail"]
    with sqlite3.connect(tmp_path / "data" / "docbus.sqlite3") as conn:
        conn.execute("UPDATE agency_events SET actor = 'someone else'")
    forged = docbus(env, "audit", "verify")
    assert forged.returncode == 1
    assert "agency 000.00.00.G22: entry 1 (registered) was altered" in forged.stdout
    unknown = docbus(env, "agency", "history", "000.00.00.H99")
    assert unknown.returncode == 1 and "no agency 000.00.00.H99 is registered" in unknown.stderr
    assert docbus(env, "dlq", "list").returncode == 0
    missing = docbus(env, "dlq", "show", "999")
    assert missing.returncode == 1
    assert "no dead letter 999" in missing.stderr


@pytest.mark.slow
def test_demo_shows_deliveries_and_receipts(env: dict[str, str], tmp_path: Path) -> None:
    run = docbus(
        env,
        "demo",
        "--port",
        str(free_port()),
        "--duration",
        "12",
        "--samples",
        str(SAMPLES),
        "--data-dir",
        str(tmp_path / "demo"),
        timeout=120,
    )
    assert run.returncode == 0, run.stderr[-2000:]
    out = run.stdout
    assert "/docs" in out and "/dashboard" in out
    assert "DELIVERED" in out
    assert "to provincial_axis" in out
    assert "to national_axis" in out
    assert "RECEIPT 06" in out
    assert "400 edoc.edxml" in out
    assert "summary: 5 documents sent" in out


@pytest.mark.parametrize("database_url", [pytest.param("postgres", marks=pytest.mark.postgres)], indirect=True)
def test_the_reading_commands_on_postgresql(env: dict[str, str], database_url: str) -> None:
    """Each command checks the schema and then reads in one event loop: a pooled asyncpg connection belongs to the
    loop that opened it, so checking in one loop and reading in another would fail here (not on SQLite)."""
    env = {**env, "DOCBUS_DATABASE_URL": database_url}
    assert docbus(env, "messages", "list").returncode == 1  # no schema yet
    assert docbus(env, "migrate").returncode == 0
    for command in [("messages", "list"), ("dlq", "list"), ("audit", "verify"), ("flows", "--json"), ("log", "groups")]:
        done = docbus(env, *command)
        assert done.returncode == 0, (command, done.stderr)
    assert orjson.loads(docbus(env, "flows", "--json").stdout)["senders"] == []


def test_check_gives_intake_verdicts_offline(env: dict[str, str], tmp_path: Path) -> None:
    """Files and folders checked without a gateway: the verdicts of intake (hostile files included), nothing stored."""
    folder = tmp_path / "packets"
    folder.mkdir()
    for sample in ("edoc_new.edxml", "status_finish_06.edxml", "edoc.edxml"):  # edoc.edxml is not well-formed
        (folder / sample).write_bytes((SAMPLES / sample).read_bytes())
    (folder / "xxe.xml").write_text(
        '<?xml version="1.0"?><!DOCTYPE edXML [<!ENTITY x SYSTEM "file:///etc/passwd">]><edXML>&x;</edXML>'
    )
    (folder / "notes.txt").write_text("not a packet: skipped")
    big = tmp_path / "big.edxml"
    big.write_bytes(b"<edXML>" + b" " * 1_100_000 + b"</edXML>")
    env = {**env, "DOCBUS_MAX_BODY_BYTES": "1000000"}

    checked = docbus(env, "check", str(folder), str(big))
    assert checked.returncode == 1, checked.stderr
    lines = {line.split()[1]: line for line in checked.stdout.splitlines() if not line.startswith(" ")}
    assert set(lines) == {
        str(folder / n) for n in ("edoc_new.edxml", "status_finish_06.edxml", "edoc.edxml", "xxe.xml")
    } | {str(big)}
    assert lines[str(folder / "edoc_new.edxml")].startswith("ok ")
    assert "xml-signature invalid (not-xmldsig)" in lines[str(folder / "edoc_new.edxml")]
    assert lines[str(folder / "edoc.edxml")].startswith("refused ") and " 400 " in lines[str(folder / "edoc.edxml")]
    assert " 400 " in lines[str(folder / "xxe.xml")] and "root:" not in checked.stdout  # no file contents
    assert " 413 " in lines[str(big)]
    assert "line 74 / [not-well-formed]" in checked.stdout
    assert "2 of 5 would be accepted" in checked.stderr
    assert not (tmp_path / "data").exists()  # no database, no keys: nothing stored

    as_json = docbus(env, "check", "--json", str(folder / "status_finish_06.edxml"))
    assert as_json.returncode == 0, as_json.stderr
    verdict = orjson.loads(as_json.stdout)
    assert verdict["accepted"] is True and verdict["kind"] == "status" and verdict["xml_signature"] is None
    assert verdict["status_code"] == "06" and verdict["response_for"]

    strict = docbus(
        {**env, "DOCBUS_XML_SIGNATURE_POLICY": "require"}, "check", "--json", str(folder / "edoc_new.edxml")
    )
    assert strict.returncode == 1
    refused = orjson.loads(strict.stdout)
    assert refused["status"] == 422 and [e["rule"] for e in refused["errors"]] == ["signature-invalid"]

    no_anchors = docbus({**env, "DOCBUS_XML_SIGNATURE_TRUST_FILE": str(tmp_path / "missing.pem")}, "check", str(big))
    assert no_anchors.returncode == 2 and "missing.pem" in no_anchors.stderr
    assert docbus(env, "check", str(tmp_path / "packets" / "notes.txt")).returncode == 1  # named: checked, refused
