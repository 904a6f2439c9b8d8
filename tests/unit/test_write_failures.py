"""Telling a full storage from other write failures, as the drivers really raise them."""

from __future__ import annotations

import errno
import sqlite3
from pathlib import Path

import asyncpg.exceptions
import pytest
import sqlalchemy.exc

from docbus.store.write_failures import WriteFailure, describe, storage_full


def sqlite_full_error(tmp_path: Path) -> sqlite3.OperationalError:
    """A real SQLITE_FULL: a database capped at a few pages, filled past them."""
    conn = sqlite3.connect(tmp_path / "capped.sqlite3")
    conn.execute("CREATE TABLE t (b BLOB)")
    conn.execute("PRAGMA max_page_count = 3")
    try:
        for _ in range(100):
            conn.execute("INSERT INTO t VALUES (?)", (b"x" * 4096,))
    except sqlite3.OperationalError as exc:
        return exc
    finally:
        conn.close()
    raise AssertionError("the capped database never filled")


def test_sqlite_full_is_full_bare_and_wrapped_by_sqlalchemy(tmp_path: Path) -> None:
    error = sqlite_full_error(tmp_path)
    assert storage_full(error)
    wrapped = sqlalchemy.exc.OperationalError("INSERT INTO t VALUES (?)", (b"x",), error)
    assert storage_full(wrapped)
    chained = RuntimeError("commit failed")
    chained.__cause__ = error
    assert storage_full(chained)
    assert describe(error).startswith("the storage is full")


def test_other_sqlite_errors_are_not_full(tmp_path: Path) -> None:
    conn = sqlite3.connect(tmp_path / "x.sqlite3")
    with pytest.raises(sqlite3.OperationalError) as caught:
        conn.execute("SELECT * FROM missing")
    conn.close()
    assert not storage_full(caught.value)
    assert describe(caught.value) == "the message store failed (OperationalError)"


@pytest.mark.parametrize(
    ("code", "full"), [(errno.ENOSPC, True), (errno.EDQUOT, True), (errno.EFBIG, True), (errno.EACCES, False)]
)
def test_operating_system_errors(code: int, full: bool) -> None:
    assert storage_full(OSError(code, "x")) is full


def test_postgresql_disk_full_bare_and_wrapped() -> None:
    error = asyncpg.exceptions.DiskFullError("could not extend file: No space left on device")
    assert storage_full(error)
    assert storage_full(sqlalchemy.exc.OperationalError("INSERT", {}, error))
    assert not storage_full(asyncpg.exceptions.UniqueViolationError("duplicate key"))


def test_a_cause_cycle_ends() -> None:
    first, second = RuntimeError("a"), RuntimeError("b")
    first.__context__, second.__context__ = second, first
    assert not storage_full(first)


def test_summary_says_since_when_how_many_and_why() -> None:
    failure = WriteFailure(since=0.0, batches=21, reason="the storage is full", full=True)
    assert failure.summary() == "writes failing since 1970-01-01T00:00:00Z (21 batches): the storage is full"
