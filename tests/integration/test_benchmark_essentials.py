"""The intake benchmark's "essential work alone" contender does the work it is said to do: the benchmark's
ratio of docbus to it means something only if it parses, validates, signs and durably writes every document it
answers 202 for, and refuses what docbus would refuse for the same reasons. Served as the benchmark serves it
(uvicorn, on loopback)."""

from __future__ import annotations

import hashlib
import os
import sqlite3
from pathlib import Path

import httpx

from docbus.signing import verify_jws
from tests.benchmark.intake_bench import essentials_server, make_template

XXE = b"""<?xml version="1.0"?>
<!DOCTYPE edXML [<!ENTITY xxe SYSTEM "file:///etc/passwd">]>
<edXML xmlns="http://www.mic.gov.vn/TBT/QCVN_102_2016">&xxe;</edXML>"""


def counts(database: Path) -> dict[str, int]:
    with sqlite3.connect(database) as conn:
        return {
            table: int(conn.execute(f"SELECT count(*) FROM {table}").fetchone()[0])  # noqa: S608 - fixed names
            for table in ("messages", "payloads", "events", "outbox")
        }


def test_essentials_contender_stores_signs_and_refuses(tmp_path: Path, samples: Path) -> None:
    template = tmp_path / "template.edxml"
    make_template(10 * 1024, template)
    documents = [template.read_bytes().replace(b"__SEQ__", str(n).encode()) for n in range(5)]
    with essentials_server(1, dict(os.environ), tmp_path) as port:
        url = f"http://127.0.0.1:{port}/v1/messages"
        with httpx.Client(timeout=10) as client:
            receipts = [client.post(url, content=body) for body in documents]
            refused = {
                "xxe": client.post(url, content=XXE),
                "not well-formed": client.post(url, content=b"<edXML><unclosed></edXML>"),
                "empty": client.post(url, content=b""),
                "schema": client.post(url, content=b'<edXML xmlns="http://www.mic.gov.vn/TBT/QCVN_102_2016"/>'),
            }
            jwks = client.get(f"http://127.0.0.1:{port}/v1/keys").json()
    database = tmp_path / "essentials-1.sqlite3"
    assert [r.status_code for r in receipts] == [202] * 5
    assert {name: r.status_code for name, r in refused.items()} == {
        "xxe": 400,
        "not well-formed": 400,
        "empty": 400,
        "schema": 422,
    }
    assert b"root:" not in refused["xxe"].content
    assert counts(database) == {"messages": 5, "payloads": 5, "events": 5, "outbox": 5}

    with sqlite3.connect(database) as conn:
        stored = dict(conn.execute("SELECT m.id, p.body FROM messages m JOIN payloads p ON p.message_id = m.id"))
    for body, answer in zip(documents, receipts, strict=True):
        receipt = answer.json()
        signed = verify_jws(receipt.pop("signature"), jwks)
        assert signed == receipt
        assert stored[receipt["message_id"]] == body
        assert receipt["sha256"] == hashlib.sha256(body).hexdigest()
        assert receipt["sender"] == "000.00.00.G22"
        assert receipt["business_id"].startswith("000.00.00.G22,2026/11/27,")
