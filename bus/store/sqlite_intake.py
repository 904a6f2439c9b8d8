"""The intake writer's SQLite path: one batch, one transaction, run on the event loop's own thread.

Through an async driver every statement is a round trip to a helper thread, and under load each return needs the
GIL back from a busy event loop (up to the interpreter's 5 ms switch interval): a batch that SQLite writes in a
couple of milliseconds kept the write lock for over ten, and every other writer of the file waited. Done inline,
the transaction costs what SQLite costs (the inserts and one fsync'd commit), prebuilt SQL with ``executemany``
skips the per-row parameter processing of an ORM layer, and the write lock is held only that long. The
transaction is ``Database.transaction()``'s, whose file lock orders the processes; these functions only run
statements on its driver connection.

Column values are stored exactly as SQLAlchemy stores them on SQLite (its DATETIME text form), so every reader of
the store sees the same rows whichever path wrote them.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Callable, Iterable, Sequence
from datetime import datetime
from typing import Any

from sqlalchemy import DateTime
from sqlalchemy.dialects import sqlite

_DIALECT = sqlite.dialect()
_datetime_processor = DateTime(timezone=True).dialect_impl(_DIALECT).bind_processor(_DIALECT)
assert _datetime_processor is not None
_store_datetime: Callable[[datetime | None], str | None] = _datetime_processor


def placeholders(values: Sequence[object]) -> str:
    """``?, ?, ?`` for an ``IN`` list of ``values``: only placeholders go into the SQL text, never values."""
    return ", ".join("?" for _ in values)


def stored_datetime(at: datetime) -> str:
    """``at`` spelled as SQLAlchemy stores a ``DateTime`` in SQLite, for plain SQL that writes one."""
    stored = _store_datetime(at)
    assert stored is not None
    return stored


MESSAGE_COLUMNS = (
    "id",
    "kind",
    "schema_id",
    "schema_version",
    "sender",
    "receivers",
    "business_id",
    "sha256",
    "size",
    "content_type",
    "received_at",
    "idempotency_key",
    "dedup_key",
    "trace_id",
    "status",
    "response_for",
    "status_code",
    "receipt",
    "payload_ref",
)
PAYLOAD_COLUMNS = ("message_id", "body")
EVENT_COLUMNS = (
    "message_id",
    "seq",
    "type",
    "at",
    "recorded_at",
    "actor",
    "destination",
    "detail",
    "prev_hash",
    "hash",
)
OUTBOX_COLUMNS = ("message_id", "topic", "record_key", "created_at", "attempts", "claimed_by", "claimed_until")
_DATETIME_COLUMNS = frozenset({"received_at", "at", "recorded_at", "created_at", "claimed_until"})


def _insert_sql(table: str, columns: Sequence[str]) -> str:
    # Table and column names are the constants of this module; values always travel as parameters.
    return f"INSERT INTO {table} ({', '.join(columns)}) VALUES ({', '.join('?' for _ in columns)})"  # noqa: S608


_INSERTS = (
    ("messages", MESSAGE_COLUMNS, _insert_sql("messages", MESSAGE_COLUMNS)),
    ("payloads", PAYLOAD_COLUMNS, _insert_sql("payloads", PAYLOAD_COLUMNS)),
    ("events", EVENT_COLUMNS, _insert_sql("events", EVENT_COLUMNS)),
    ("outbox", OUTBOX_COLUMNS, _insert_sql("outbox", OUTBOX_COLUMNS)),
)


def _tuples(rows: Iterable[dict[str, Any]], columns: Sequence[str]) -> list[tuple[Any, ...]]:
    converted = []
    for row in rows:
        converted.append(tuple(_store_datetime(row[c]) if c in _DATETIME_COLUMNS else row[c] for c in columns))
    return converted


def existing_identities(
    conn: sqlite3.Connection, keys: dict[str, set[str]]
) -> dict[tuple[str, str], tuple[str, bytes, str]]:
    """Stored (sender, dedup_key) → (sha256, receipt, message id), for the given keys of each sender."""
    found: dict[tuple[str, str], tuple[str, bytes, str]] = {}
    for sender, dedup_keys in keys.items():
        ordered = sorted(dedup_keys)
        marks = placeholders(ordered)
        # (sender, dedup_key) is the unique index: naming the sender makes this an index probe.
        cursor = conn.execute(
            f"SELECT dedup_key, sha256, receipt, id FROM messages WHERE sender = ? AND dedup_key IN ({marks})",  # noqa: S608
            (sender, *ordered),
        )
        for dedup_key, sha256, receipt, message_id in cursor:
            found[(sender, dedup_key)] = (sha256, bytes(receipt), message_id)
    return found


def insert_rows(conn: sqlite3.Connection, tables: dict[str, list[dict[str, Any]]]) -> None:
    """``executemany`` per table, in foreign-key order (messages first)."""
    for table, columns, sql in _INSERTS:
        rows = tables.get(table)
        if rows:
            conn.executemany(sql, _tuples(rows, columns))
