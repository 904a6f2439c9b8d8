"""The commit tracker: the group's offset moves past a record only when it and everything before it in its
partition are done, whatever order they finish in."""

from __future__ import annotations

from docbus.broker.base import ConsumedRecord
from docbus.delivery.offsets import CommitTracker


def record(partition: int, offset: int, topic: str = "t") -> ConsumedRecord:
    return ConsumedRecord(topic, partition, offset, None, b"", (), 0)


def test_only_the_leading_finished_run_of_each_partition_is_released() -> None:
    tracker = CommitTracker()
    entries = {(p, o): tracker.add(record(p, o), mark=o) for p in (0, 1) for o in (10, 11, 12)}
    entries[(0, 11)].done = True
    entries[(0, 12)].done = True
    entries[(1, 10)].done = True
    released, mark = tracker.committable()
    assert [(r.partition, r.offset) for r in released] == [(1, 10)]
    assert mark == 10
    assert len(tracker) == 5

    entries[(0, 10)].done = True  # the slow one finishes: everything up to 12 goes at once
    released, mark = tracker.committable()
    assert [(r.partition, r.offset) for r in released] == [(0, 12)]
    assert mark == 10  # the earliest mark among the three released
    assert len(tracker) == 2


def test_nothing_finished_releases_nothing_and_clear_forgets() -> None:
    tracker = CommitTracker()
    tracker.add(record(0, 1), mark=0)
    assert tracker.committable() == ([], None)
    tracker.clear()
    assert len(tracker) == 0
    assert tracker.committable() == ([], None)
