"""Message ids are ULIDs any ULID library reads back, in arrival order within a process."""

from __future__ import annotations

import time
from datetime import UTC, datetime, timedelta

import pytest
from ulid import ULID

from docbus import ids
from docbus.ids import encode_ulid, new_message_id


def test_an_id_is_a_ulid_of_now() -> None:
    before = datetime.now(UTC)
    made = new_message_id()
    after = datetime.now(UTC)
    parsed = ULID.from_str(made)
    assert str(parsed) == made and len(made) == 26
    assert before - timedelta(milliseconds=1) <= parsed.datetime <= after


def test_encoding_agrees_with_the_library() -> None:
    for value in (0, 1, (1 << 128) - 1, 0x0123456789ABCDEF0123456789ABCDEF, 1 << 80, (1 << 80) - 1):
        assert encode_ulid(value) == str(ULID.from_int(value))


def test_ids_increase_within_a_millisecond_and_when_the_clock_steps_back(monkeypatch: pytest.MonkeyPatch) -> None:
    many = [new_message_id() for _ in range(20_000)]  # many per millisecond
    assert many == sorted(many) and len(set(many)) == len(many)
    now = time.time_ns()
    monkeypatch.setattr(ids.time, "time_ns", lambda: now - 5_000_000_000)  # five seconds back
    later = [new_message_id() for _ in range(3)]
    assert many[-1] < later[0] < later[1] < later[2]


def test_the_random_part_differs_between_milliseconds(monkeypatch: pytest.MonkeyPatch) -> None:
    ticks = iter(range(10**15, 10**15 + 1000 * 1_000_000, 1_000_000))
    clock = ids._UlidClock()
    monkeypatch.setattr(ids.time, "time_ns", lambda: next(ticks))
    randoms = {clock.next() & ((1 << 80) - 1) for _ in range(1000)}
    assert len(randoms) == 1000
