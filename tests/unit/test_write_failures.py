"""Telling a full storage from other write failures, as the drivers really raise them."""

from __future__ import annotations

import errno
import logging
import sqlite3
from pathlib import Path

import asyncpg.exceptions
import pytest
import sqlalchemy.exc

from docbus import free_space as free_space_module
from docbus.settings import Settings
from docbus.store import write_failures
from docbus.store.write_failures import FailureStreak, WriteFailure, describe, storage_full


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
    failure = WriteFailure(since=0.0, count=21, reason="the storage is full", full=True)
    assert failure.summary() == "writes failing since 1970-01-01T00:00:00Z (21 batches): the storage is full"


def test_a_streak_logs_its_first_failure_with_a_traceback_then_sparingly_then_its_end(
    caplog: pytest.LogCaptureFixture, monkeypatch: pytest.MonkeyPatch
) -> None:
    clock = [100.0]
    monkeypatch.setattr(write_failures.time, "monotonic", lambda: clock[0])
    log = logging.getLogger("docbus.test.streak")
    caplog.set_level(logging.INFO, logger="docbus.test.streak")
    streak = FailureStreak("payload store", log, unit="writes")
    broken = NotADirectoryError(errno.ENOTDIR, "Not a directory", "/srv/secret/payloads/2026")
    for _ in range(5):  # within 10 s: one line, with its traceback
        first = streak.failed(broken, "01JDOCBUS")
    clock[0] += 10.5
    last = streak.failed(OSError(errno.ENOSPC, "No space left on device"), "01JDOCBUS")
    streak.succeeded()
    streak.succeeded()  # nothing more to say

    lines = [(r.levelno, r.getMessage(), r.exc_info is not None) for r in caplog.records]
    assert lines[0] == (
        logging.ERROR,
        "payload store write failed for 01JDOCBUS: the payload store failed (NotADirectoryError: Not a directory)",
        True,
    )
    assert lines[1][0] == logging.ERROR and lines[1][1].startswith("payload store writes still failing: ")
    assert "(6 writes): the storage is full" in lines[1][1] and not lines[1][2]
    assert lines[2][0] == logging.WARNING and lines[2][1].startswith("payload store writes succeed again after ")
    assert len(lines) == 3
    # The reason is shown by /readyz, which anyone may read; the path is for the log's traceback only.
    assert not [line for line in lines if "/srv/secret" in line[1]] and "/srv/secret" not in first.reason
    assert first.count == 5 and not first.full
    assert last.count == 6 and last.full and last.since == first.since
    assert streak.current is None


def test_free_space_fails_below_two_bodies_of_the_size_cap_and_warns_below_a_gibibyte(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    settings = Settings(data_dir=tmp_path / "data", max_body_bytes=1_000_000)
    for free, verdict in [(1_999_999, "fail"), (2_000_000, "warn"), (1 << 30, "ok")]:
        usage = free_space_module.shutil._ntuple_diskusage(10 << 30, (10 << 30) - free, free)  # type: ignore[attr-defined]
        monkeypatch.setattr(free_space_module.shutil, "disk_usage", lambda _path, usage=usage: usage)
        (space,) = free_space_module.free_space(settings)  # data, payloads and database share one filesystem
        assert space.verdict == verdict
        assert space.names == ("data directory", "payload store", "database")
        assert str(tmp_path) in space.describe() and str(tmp_path) not in space.describe(with_path=False)
