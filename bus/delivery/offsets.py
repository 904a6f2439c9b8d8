"""Which offsets a consumer may commit while the records of a partition finish out of order.

A destination's records are delivered concurrently (in order only within a business id), so a record that is
being retried must not hold back the others, yet the group's offset may only move past records that are done:
a crash then re-reads exactly the unfinished ones (and the done ones after them, which are recognised as
delivered). This tracker holds, per partition, the records in flight in offset order; the committable position
is the end of the leading run of finished ones.
"""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass, field

from docbus.broker.base import ConsumedRecord

Partition = tuple[str, int]


@dataclass(slots=True)
class Entry:
    record: ConsumedRecord
    mark: int  # the event recorder's mark when the record was taken (see EventRecorder.mark)
    done: bool = False


@dataclass
class CommitTracker:
    _partitions: dict[Partition, deque[Entry]] = field(default_factory=dict)
    _count: int = 0

    def __len__(self) -> int:
        """Records taken and not yet released by :meth:`committable`."""
        return self._count

    def add(self, record: ConsumedRecord, mark: int) -> Entry:
        """Track a record; records of one partition must be added in offset order (as polls return them)."""
        entry = Entry(record, mark)
        self._partitions.setdefault((record.topic, record.partition), deque()).append(entry)
        self._count += 1
        return entry

    def committable(self) -> tuple[list[ConsumedRecord], int | None]:
        """Release the leading finished records of every partition: the last of each (commit it: it covers
        those before it) and the earliest recorder mark among all released (for ``flush(since=...)``)."""
        last: list[ConsumedRecord] = []
        mark: int | None = None
        for entries in self._partitions.values():
            released: Entry | None = None
            while entries and entries[0].done:
                released = entries.popleft()
                self._count -= 1
                mark = released.mark if mark is None else min(mark, released.mark)
            if released is not None:
                last.append(released.record)
        return last, mark

    def clear(self) -> None:
        """Forget every record (after a rebalance: what is re-read is tracked again)."""
        self._partitions.clear()
        self._count = 0
