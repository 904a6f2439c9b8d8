"""Rotating the receipt-signing key under a running gateway of two processes, with the real commands.

Receipts issued before the rotation keep verifying against ``GET /v1/keys`` (and with ``docbus receipt verify``);
both processes sign with the new key within seconds, without a restart; a receipt altered after the fact, or
checked against another file, is refused with exit status 1.
"""

from __future__ import annotations

import base64
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import httpx
import orjson
import pytest

from docbus.signing import verify_receipt

from ..conftest import SAMPLES, free_port
from .helpers import with_unique_document_id

pytestmark = pytest.mark.slow
DOC = SAMPLES / "edoc_with_attachment_dc0bdef0.edxml"  # sent by 000.00.00.G22
XML = {"Content-Type": "application/xml"}


def docbus(env: dict[str, str], *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "docbus.cli", *args], env=env, capture_output=True, text=True, timeout=60
    )


def kid_of(receipt: bytes) -> str:
    header = orjson.loads(receipt)["signature"].split(".")[0]
    return str(orjson.loads(base64.urlsafe_b64decode(header + "=" * (-len(header) % 4)))["kid"])


def test_rotating_the_signing_key_under_a_running_gateway(tmp_path: Path) -> None:
    env = {**os.environ, "DOCBUS_DATA_DIR": str(tmp_path / "data")}
    for name in ("DOCBUS_DATABASE_URL", "DOCBUS_KAFKA_BOOTSTRAP", "DOCBUS_ROUTES_FILE"):
        env.pop(name, None)
    packet = DOC.read_bytes()
    sender = "000.00.00.G22"
    added = docbus(env, "agency", "add", sender, "--name", "Văn phòng Chính phủ")
    assert added.returncode == 0, added.stderr
    key = added.stdout.strip().splitlines()[-1]
    before = docbus(env, "signing-key", "show", "--json")  # creates nothing: the gateway makes the first key
    assert before.returncode != 0
    port = free_port()
    base = f"http://127.0.0.1:{port}"
    log = (tmp_path / "gateway.log").open("wb")
    proc = subprocess.Popen(
        [sys.executable, "-m", "docbus.cli", "gateway", "--port", str(port), "--workers", "2", "--log-level", "info"],
        env=env,
        stdout=log,
        stderr=subprocess.STDOUT,
    )
    try:
        with httpx.Client(base_url=base, headers={"Authorization": f"Bearer {key}"}, timeout=10) as client:
            for _ in range(300):
                try:
                    if client.get("/healthz").status_code == 200:
                        break
                except httpx.TransportError:
                    time.sleep(0.1)

            def submit() -> tuple[bytes, bytes]:
                body = with_unique_document_id(packet)
                answer = client.post("/v1/messages", content=body, headers=XML)
                assert answer.status_code == 202, answer.text
                return answer.content, body

            old_receipt, old_body = submit()
            old_kid = kid_of(old_receipt)

            rotated = docbus(env, "signing-key", "rotate")
            assert rotated.returncode == 0, rotated.stderr
            new_kid = rotated.stdout.strip().splitlines()[-1]
            assert f"retired {old_kid}" in rotated.stdout and new_kid != old_kid

            # Any process answers the key set from the files as they are now.
            for _ in range(6):
                assert [k["kid"] for k in client.get("/v1/keys").json()["keys"]] == [new_kid, old_kid]
            # Both processes change over within their recheck interval (5 s), without a restart.
            deadline = time.monotonic() + 15
            streak = 0
            while streak < 20:
                assert time.monotonic() < deadline, "the gateway processes kept signing with the retired key"
                receipt, body = submit()
                streak = streak + 1 if kid_of(receipt) == new_kid else 0
            new_receipt, new_body = receipt, body

            jwks = client.get("/v1/keys").json()
            assert verify_receipt(old_receipt, jwks, old_body)["sender"] == sender
            assert verify_receipt(new_receipt, jwks, new_body)["sender"] == sender
            message_id = orjson.loads(old_receipt)["message_id"]
            assert client.get(f"/v1/messages/{message_id}/receipt").content == old_receipt
    finally:
        proc.send_signal(signal.SIGTERM)
        proc.wait(timeout=30)
        log.close()
    assert "signing receipts with key" in (tmp_path / "gateway.log").read_text()

    files = tmp_path / "files"
    files.mkdir()
    (files / "old.json").write_bytes(old_receipt)
    (files / "old.edxml").write_bytes(old_body)
    (files / "new.edxml").write_bytes(new_body)
    (files / "keys.json").write_bytes(orjson.dumps(jwks))
    tampered = orjson.loads(old_receipt)
    tampered["receivers"] = ["000.00.00.A80"]
    (files / "tampered.json").write_bytes(orjson.dumps(tampered))

    # The deployment's own key files, a saved key set: the old receipt verifies, with its payload.
    ok = docbus(env, "receipt", "verify", str(files / "old.json"), "--payload", str(files / "old.edxml"))
    assert ok.returncode == 0, ok.stderr
    assert orjson.loads(ok.stdout)["message_id"] == message_id
    assert "receipt verified" in ok.stderr
    saved = docbus(env, "receipt", "verify", str(files / "old.json"), "--jwks", str(files / "keys.json"))
    assert saved.returncode == 0, saved.stderr

    other = docbus(env, "receipt", "verify", str(files / "old.json"), "--payload", str(files / "new.edxml"))
    assert other.returncode == 1 and "not the message this receipt is for" in other.stderr
    altered = docbus(env, "receipt", "verify", str(files / "tampered.json"))
    assert altered.returncode == 1 and "differ from what was signed: receivers" in altered.stderr

    shown = docbus(env, "signing-key", "show")
    assert shown.returncode == 0
    assert shown.stdout.splitlines()[0].startswith(f"current  {new_kid}")
    assert f"retired  {old_kid}" in shown.stdout
