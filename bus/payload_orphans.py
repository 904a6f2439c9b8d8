"""Claim-checked payload files that no message refers to: found, and removed on request.

Intake writes a large payload to the payload store before the commit that records its reference, so a gateway
killed between the two leaves a file behind; so does payload retention killed between its commit and the file's
removal, and a write to PostgreSQL whose commit's fate was lost with the connection. (Intake removes the files of
replays, conflicts and writes known to have stored nothing by itself.) Such files are up to the size cap each and
nothing would ever remove them: ``docbus payloads orphans`` lists them, ``--delete`` removes them.

A file younger than the grace period (an hour by default) is left alone: its submission may still be on its way to
the commit. Interrupted writes (``.<id>.<random>.tmp``) older than that are orphans too. Anything else found in
the folder is not the store's and is not touched.
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
    db: Database, store: DirectoryPayloadStore, *, grace_seconds: float = DEFAULT_GRACE_SECONDS
) -> list[Orphan]:
    """The store's files older than ``grace_seconds`` that no message's ``payload_ref`` names."""
    cutoff = time.time() - grace_seconds
    candidates = await asyncio.to_thread(lambda: list(_old_files(store.root, cutoff)))
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
    db: Database, store: DirectoryPayloadStore, *, grace_seconds: float = DEFAULT_GRACE_SECONDS, delete: bool
) -> OrphanReport:
    """Finds the orphans and, with ``delete``, removes them (one gone already counts as removed)."""
    report = OrphanReport(await find_orphans(db, store, grace_seconds=grace_seconds))
    if delete:
        for orphan in report.orphans:
            await asyncio.to_thread(orphan.path.unlink, missing_ok=True)
            report.removed += 1
    return report


def _old_files(root: Path, cutoff: float) -> Iterator[tuple[Path, int, str | None]]:
    """(path, size, reference) of each file of the store's layout modified before ``cutoff``; the reference is
    ``None`` for an interrupted write, which nothing can refer to."""
    if not root.is_dir():
        return
    for path in root.glob("*/*/*/*"):
        day = path.parent.relative_to(root).as_posix()
        if not _DAY.match(day) or path.is_symlink() or not path.is_file():
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
