"""Claim-checked payload files that no message refers to: found, and removed on request.

Intake writes a large payload to the payload store before the commit that records its reference, so a gateway
killed between the two leaves a file behind; so does payload retention killed between its commit and the file's
removal, and a write to PostgreSQL whose commit's fate was lost with the connection. (Intake removes the files of
replays, conflicts and writes known to have stored nothing by itself.) Such files are up to the size cap each and
nothing would ever remove them: ``docbus payloads orphans`` lists them, ``--delete`` removes them.

A file younger than the grace period (an hour by default) is left alone: its submission may still be on its way to
the commit. Interrupted writes (``.<id>.<random>.tmp``) older than that are orphans too. Anything else found in
the folder is not the store's and is not touched.

Workers also remove them by themselves (``OrphanSweep``), with a longer grace (a day by default,
``DOCBUS_PAYLOAD_ORPHAN_GRACE_HOURS``; 0 turns it off): a worker's first pass looks at every day's folder, later
passes only at the folders of days that can hold files that have come of age since the pass before (the store
shards by the day a message arrived), so a store of millions of files is not walked every hour.
"""

from __future__ import annotations

import asyncio
import re
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

from sqlalchemy import select

from docbus.payload_store import DirectoryPayloadStore
from docbus.periodic import every
from docbus.store.database import Database
from docbus.store.tables import messages

_DAY = re.compile(r"^[0-9]{4}/[0-9]{2}/[0-9]{2}$")
_MESSAGE_ID = re.compile(r"^[0-9A-Z]{26}$")
_TEMP = re.compile(r"^\.[0-9A-Z]{26}\.[0-9a-f]{32}\.tmp$")
BATCH = 500  # message ids looked up per query
DEFAULT_GRACE_SECONDS = 3600.0


@dataclass(frozen=True)
class Orphan:
    path: Path
    size: int


@dataclass
class OrphanReport:
    orphans: list[Orphan] = field(default_factory=list)
    removed: int = 0

    @property
    def bytes(self) -> int:
        return sum(orphan.size for orphan in self.orphans)


async def find_orphans(
    db: Database,
    store: DirectoryPayloadStore,
    *,
    grace_seconds: float = DEFAULT_GRACE_SECONDS,
    since_day: str | None = None,
) -> list[Orphan]:
    """The store's files older than ``grace_seconds`` that no message's ``payload_ref`` names; with ``since_day``
    (``YYYY/MM/DD``) only in the folders of that day and later."""
    cutoff = time.time() - grace_seconds
    candidates = await asyncio.to_thread(lambda: list(_old_files(store.root, cutoff, since_day)))
    orphans = [Orphan(path, size) for path, size, ref in candidates if ref is None]
    named = [(path, size, ref) for path, size, ref in candidates if ref is not None]
    for start in range(0, len(named), BATCH):
        chunk = named[start : start + BATCH]
        ids = [path.name for path, _, _ in chunk]
        async with db.reader.connect() as conn:
            rows = await conn.execute(select(messages.c.id, messages.c.payload_ref).where(messages.c.id.in_(ids)))
            referenced = {str(ref) for _, ref in rows if ref is not None}
        orphans.extend(Orphan(path, size) for path, size, ref in chunk if ref not in referenced)
    return sorted(orphans, key=lambda orphan: orphan.path)


async def remove_orphans(
    db: Database,
    store: DirectoryPayloadStore,
    *,
    grace_seconds: float = DEFAULT_GRACE_SECONDS,
    delete: bool,
    since_day: str | None = None,
) -> OrphanReport:
    """Finds the orphans and, with ``delete``, removes them (one gone already counts as removed)."""
    report = OrphanReport(await find_orphans(db, store, grace_seconds=grace_seconds, since_day=since_day))
    if delete:
        for orphan in report.orphans:
            await asyncio.to_thread(orphan.path.unlink, missing_ok=True)
            report.removed += 1
    return report


def _old_files(root: Path, cutoff: float, since_day: str | None = None) -> Iterator[tuple[Path, int, str | None]]:
    """(path, size, reference) of each file of the store's layout modified before ``cutoff``, in the day folders
    from ``since_day`` on (all of them without it); the reference is ``None`` for an interrupted write, which
    nothing can refer to."""
    if not root.is_dir():
        return
    for folder in root.glob("*/*/*"):
        day = folder.relative_to(root).as_posix()
        if not _DAY.match(day) or folder.is_symlink() or not folder.is_dir():
            continue
        if since_day is not None and day < since_day:
            continue
        for path in folder.iterdir():
            if path.is_symlink() or not path.is_file():
                continue
            if _MESSAGE_ID.match(path.name):
                ref: str | None = f"dir:{day}/{path.name}"
            elif _TEMP.match(path.name):
                ref = None
            else:
                continue
            stat = path.stat()
            if stat.st_mtime < cutoff:
                yield path, stat.st_size, ref


class OrphanSweep:
    """Removes orphaned payload files every ``interval_seconds`` in a worker, once they are ``grace_seconds`` old.

    Every worker runs it; two passes at once remove each file once (one gone already counts as removed). After a
    process' first pass, which looks at every day's folder, a pass looks only at the folders from the day of (its
    previous pass' start - the grace - a day of slack for clocks) on: an orphan comes of age ``grace_seconds``
    after it was written, and is filed under the day its message arrived."""

    what = "payload orphan sweep"

    def __init__(
        self, db: Database, store: DirectoryPayloadStore, *, grace_seconds: float, interval_seconds: float
    ) -> None:
        if grace_seconds <= 0:
            raise ValueError("grace_seconds must be positive (leave the sweep off instead)")
        self._db = db
        self._store = store
        self._grace = grace_seconds
        self._interval = interval_seconds
        self._previous_start: float | None = None

    async def run(self, stop: asyncio.Event) -> None:
        """A pass at once, then every interval, until ``stop`` is set."""
        await every(self._interval, stop, self.sweep, self.what)

    async def sweep(self) -> str | None:
        """One pass; what it removed, for the log (``None`` when nothing)."""
        started = time.time()
        since_day = None
        if self._previous_start is not None:
            since_day = time.strftime("%Y/%m/%d", time.gmtime(self._previous_start - self._grace - 86400))
        report = await remove_orphans(
            self._db, self._store, grace_seconds=self._grace, delete=True, since_day=since_day
        )
        self._previous_start = started
        if not report.removed:
            return None
        files = "file" if report.removed == 1 else "files"
        return f"removed {report.removed} payload {files} no message refers to ({report.bytes} bytes)"
