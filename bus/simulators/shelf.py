"""Records a simulator keeps, stored where the garbage collector does not look.

A simulator keeps the packets it is sent and the receipts it schedules (up to 50,000 packets by default): under
load, hundreds of thousands of records within a minute. CPython walks every object it tracks on each full
collection, and objects of a class, named tuples included, are tracked for life: the simulator stalled for 110-270
ms every few seconds during a forwarding benchmark, and every delivery in flight waited it out. A plain tuple whose
items are strings, bytes, numbers, ``None``, dates or such tuples is dropped from tracking by a full collection that
finds its items all untracked (one level of nesting per collection, innermost first; full collections come every few
seconds under load, more often once the heap is small), so a :class:`Shelf` stores each record as a plain tuple and
rebuilds the named tuple when it is read. The dictionary holding the rows is itself walked by every collection that
looks at it; a served simulator builds its shelves before it freezes its heap (``run_app``), so no collection looks
at them.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any, Generic, TypeVar

Record = TypeVar("Record", bound=tuple[Any, ...])


class Shelf(Generic[Record]):
    """A mapping of string keys to records (named tuples): ``pack`` turns a record into its plain tuple (of
    strings, bytes, numbers, ``None``, dates and such tuples only), ``rebuild`` turns one back."""

    def __init__(self, pack: Callable[[Record], tuple[Any, ...]], rebuild: Callable[[tuple[Any, ...]], Record]) -> None:
        self._rows: dict[str, tuple[Any, ...]] = {}
        self._pack = pack
        self._rebuild = rebuild

    def __setitem__(self, key: str, record: Record) -> None:
        self._rows[key] = self._pack(record)

    def __getitem__(self, key: str) -> Record:
        return self._rebuild(self._rows[key])

    def __contains__(self, key: object) -> bool:
        return key in self._rows

    def __len__(self) -> int:
        return len(self._rows)

    def get(self, key: str) -> Record | None:
        row = self._rows.get(key)
        return None if row is None else self._rebuild(row)

    def values(self) -> Iterator[Record]:
        return map(self._rebuild, self._rows.values())

    def discard(self, key: str) -> None:
        self._rows.pop(key, None)

    def oldest(self) -> str | None:
        """The key stored first (of those still here)."""
        return next(iter(self._rows), None)

    def clear(self) -> None:
        self._rows.clear()
