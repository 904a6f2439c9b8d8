"""Readers that tail the events table by id take only the rows written before a cutoff, up to the first one
written after it: one recent row holds back the older ones behind it."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from docbus.store.messages import settled_prefix

NOW = datetime(2026, 11, 27, 12, 0, tzinfo=UTC)


def written(seconds_ago: list[float]) -> list[tuple[int, datetime]]:
    return [(i, NOW - timedelta(seconds=s)) for i, s in enumerate(seconds_ago, start=1)]


def ids(rows: object) -> list[int]:
    return [i for i, _ in rows]  # type: ignore[attr-defined]


def test_stops_at_the_first_row_written_after_the_cutoff_even_if_later_rows_are_older() -> None:
    rows = written([10, 9, 1, 30, 8])
    assert ids(settled_prefix(rows, lambda row: row[1], NOW - timedelta(seconds=2))) == [1, 2]


def test_takes_everything_settled_and_nothing_when_the_first_row_is_fresh() -> None:
    cutoff = NOW - timedelta(seconds=2)
    assert ids(settled_prefix(written([10, 9, 8]), lambda row: row[1], cutoff)) == [1, 2, 3]
    assert ids(settled_prefix(written([1, 9, 8]), lambda row: row[1], cutoff)) == []
    assert ids(settled_prefix([], lambda row: row[1], cutoff)) == []


def test_a_row_written_exactly_at_the_cutoff_is_not_settled() -> None:
    rows = written([3, 2])
    assert ids(settled_prefix(rows, lambda row: row[1], NOW - timedelta(seconds=2))) == [1]
