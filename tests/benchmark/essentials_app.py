"""The third contender of the intake benchmark: intake's essential work alone, on the same uvicorn + httptools +
uvloop stack, with none of what surrounds it in docbus.

Per request it does only what no implementation of intake's promise (validated, durable, signed) can skip, with
docbus' own parts: reads the body, parses it with docbus' safe parser (``SafeXmlParser``), validates it against
docbus' compiled edXML XSD, hashes it, signs a receipt of the same fields with docbus' Ed25519 signer, and answers
202 once a group commit (WAL, ``synchronous=FULL``, one transaction per burst, docbus' cross-process write lock) has
written a message row, the payload, an event and an outbox row. It leaves out the rest: FastAPI, authentication,
idempotency, the edXML rules beyond the XSD, XML-DSig checks, routing, the audit chain, metrics, timeouts and
budgets. Its rate is therefore a ceiling no version of docbus on this machine can pass, and docbus' rate over this
one says what everything else costs.

Served by ``uvicorn --factory essentials_app:create_app``; ``DOCBUS_BENCH_ESSENTIALS_DB`` names the SQLite file
(created when missing).
"""

from __future__ import annotations

import asyncio
import hashlib
import os
import sqlite3
from datetime import UTC, datetime
from typing import Any

from lxml import etree

from docbus.envelope import MessageKind
from docbus.errors import NotWellFormed
from docbus.ids import new_message_id
from docbus.schemas.registry import SchemaRegistry
from docbus.signing import ReceiptSigner, canonical_json
from docbus.store.database import _WriteFileLock
from docbus.validation.safe_xml import SafeXmlParser, XmlLimits

NS = "{http://www.mic.gov.vn/TBT/QCVN_102_2016}"
SENDER_PATH = etree.XPath("string(//e:From/e:OrganId)", namespaces={"e": NS[1:-1]})
DOCUMENT_ID_PATH = etree.XPath("string(//e:DocumentId)", namespaces={"e": NS[1:-1]})
MAX_BODY = 64 * 1024 * 1024
SCHEMA_DDL = (
    "CREATE TABLE IF NOT EXISTS messages (id TEXT PRIMARY KEY, kind TEXT, sender TEXT, business_id TEXT,"
    " sha256 TEXT, size INTEGER, received_at TEXT, receipt BLOB)",
    "CREATE TABLE IF NOT EXISTS payloads (message_id TEXT PRIMARY KEY, body BLOB)",
    "CREATE TABLE IF NOT EXISTS events (id INTEGER PRIMARY KEY, message_id TEXT, kind TEXT, at TEXT)",
    "CREATE TABLE IF NOT EXISTS outbox (message_id TEXT PRIMARY KEY, topic TEXT)",
)
Row = tuple[tuple[Any, ...], tuple[Any, ...], tuple[Any, ...], tuple[Any, ...], "asyncio.Future[None]"]


class GroupCommit:
    """Writes every submission waiting when the previous transaction ended in one transaction."""

    def __init__(self, path: str) -> None:
        self._conn = sqlite3.connect(path, isolation_level=None, check_same_thread=False)
        self._conn.execute("PRAGMA busy_timeout=10000")  # every worker process sets the file up at start
        self._conn.execute("PRAGMA journal_mode=WAL")
        for ddl in SCHEMA_DDL:
            self._conn.execute(ddl)
        self._conn.execute("PRAGMA synchronous=FULL")
        self._lock = _WriteFileLock(path + ".lock")  # docbus' own: writers of all processes take turns
        self._pending: list[Row] = []
        self._running = False

    async def submit(self, row: Row) -> None:
        self._pending.append(row)
        if not self._running:
            self._running = True
            asyncio.get_running_loop().create_task(self._run())
        await row[4]

    async def _run(self) -> None:
        try:
            await asyncio.sleep(0)  # let the requests that arrived together join the first transaction
            while self._pending:
                batch, self._pending = self._pending, []
                try:
                    async with self._lock.held():
                        self._conn.execute("BEGIN IMMEDIATE")
                        self._conn.executemany("INSERT INTO messages VALUES (?,?,?,?,?,?,?,?)", [r[0] for r in batch])
                        self._conn.executemany("INSERT INTO payloads VALUES (?,?)", [r[1] for r in batch])
                        self._conn.executemany(
                            "INSERT INTO events (message_id, kind, at) VALUES (?,?,?)", [r[2] for r in batch]
                        )
                        self._conn.executemany("INSERT INTO outbox VALUES (?,?)", [r[3] for r in batch])
                        self._conn.execute("COMMIT")
                except sqlite3.Error as exc:
                    if self._conn.in_transaction:
                        self._conn.execute("ROLLBACK")
                    for row in batch:
                        row[4].set_exception(exc)
                    continue
                for row in batch:
                    row[4].set_result(None)
                await asyncio.sleep(0)
        finally:
            self._running = False


class EssentialsApp:
    def __init__(self, database: str) -> None:
        self._registry = SchemaRegistry()
        edoc = self._registry.for_kind(MessageKind.EDOC)
        self._schema_ref = {"id": edoc.id, "version": edoc.version}
        self._xsd = self._registry.xml_schema(edoc.id, edoc.version)
        self._parser = SafeXmlParser(XmlLimits())
        self._signer = ReceiptSigner.generate()
        self._writer = GroupCommit(database)

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] == "lifespan":
            while True:
                message = await receive()
                await send({"type": message["type"] + ".complete"})
                if message["type"] == "lifespan.shutdown":
                    return
        if scope["type"] != "http":
            return
        if scope["method"] == "POST":
            status, body = await self._handle(receive)
        elif scope["path"] == "/v1/keys":  # so that a test can check the receipts' signatures
            status, body = 200, canonical_json(self._signer.jwks())
        else:  # the benchmark's readiness probe
            status, body = 200, b"{}"
        headers = [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode())]
        await send({"type": "http.response.start", "status": status, "headers": headers})
        await send({"type": "http.response.body", "body": body})

    async def _handle(self, receive: Any) -> tuple[int, bytes]:
        chunks: list[bytes] = []
        size = 0
        more = True
        while more:
            message = await receive()
            chunk = message.get("body", b"")
            size += len(chunk)
            if size > MAX_BODY:
                return 413, b'{"error":"too large"}'
            chunks.append(chunk)
            more = message.get("more_body", False)
        body = b"".join(chunks)
        try:
            tree = self._parser.parse(body)
        except NotWellFormed:
            return 400, b'{"error":"not well-formed"}'
        if not self._xsd.validate(tree):
            return 422, b'{"error":"invalid"}'
        fields = {
            "message_id": new_message_id(),
            "kind": "edoc",
            "schema": self._schema_ref,
            "sender": SENDER_PATH(tree),
            "receivers": [],
            "business_id": DOCUMENT_ID_PATH(tree),
            "sha256": hashlib.sha256(body).hexdigest(),
            "size": len(body),
            "received_at": datetime.now(UTC).isoformat(),
        }
        receipt = canonical_json({**fields, "signature": self._signer.sign(canonical_json(fields))})
        mid = fields["message_id"]
        done: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        message_row = (mid, "edoc", fields["sender"], fields["business_id"], fields["sha256"], len(body))
        await self._writer.submit(
            (
                (*message_row, fields["received_at"], receipt),
                (mid, body),
                (mid, "ACCEPTED", fields["received_at"]),
                (mid, f"docbus.agency.{fields['sender']}"),
                done,
            )
        )
        return 202, receipt


def create_app() -> EssentialsApp:
    """For ``uvicorn --factory essentials_app:create_app``."""
    return EssentialsApp(os.environ["DOCBUS_BENCH_ESSENTIALS_DB"])
