"""Room left on the filesystems docbus writes to: the data directory, the payload store and a SQLite database.

A full disk is the failure a single-machine deployment meets first: every submission is refused with 503 until an
operator makes room. ``docbus config check`` reports it before start-up and ``/readyz`` while running, before the
writes start failing.
"""

from __future__ import annotations

import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from sqlalchemy.engine import make_url
from sqlalchemy.exc import ArgumentError

from docbus.settings import Settings

Verdict = Literal["ok", "warn", "fail"]

LOW_SPACE_BYTES = 1 << 30


@dataclass(frozen=True, slots=True)
class Space:
    """Room left on one filesystem docbus writes to, and what of docbus' lives there."""

    path: Path
    names: tuple[str, ...]  # "data directory", "payload store", "database"
    free: int
    total: int
    verdict: Verdict
    problem: str | None  # why the verdict is not ok

    def describe(self, *, with_path: bool = True) -> str:
        where = f" at {self.path}" if with_path else ""
        detail = f"{self.free / 1e9:.1f} GB free of {self.total / 1e9:.1f} GB{where} ({', '.join(self.names)})"
        return f"{detail}: {self.problem}" if self.problem else detail


def free_space(settings: Settings) -> list[Space]:
    """Room left where docbus writes (one entry per filesystem), for ``docbus config check`` and ``/readyz``. A
    full disk refuses every submission with 503 until an operator makes room; this says so before it happens.
    ``fail`` below two bodies of the size cap (one packet and its copy in SQLite's WAL would not fit), ``warn``
    below 1 GiB."""
    places: dict[Path, list[str]] = {}
    wanted = [("data directory", settings.data_dir), ("payload store", settings.resolved_payload_dir())]
    try:
        database = make_url(settings.resolved_database_url())
    except ArgumentError:
        pass  # the database's own finding says what is wrong with the URL
    else:
        if database.get_backend_name() == "sqlite" and database.database:
            wanted.append(("database", Path(database.database).parent))
    by_device: dict[int, Path] = {}
    for name, path in wanted:
        existing = nearest_existing(path)
        device = existing.stat().st_dev
        places.setdefault(by_device.setdefault(device, existing), []).append(name)
    spaces = []
    floor = 2 * settings.max_body_bytes
    for path, names in places.items():
        usage = shutil.disk_usage(path)
        verdict: Verdict = "ok"
        problem = None
        if usage.free < floor:
            verdict = "fail"
            problem = f"less than two bodies of the size cap ({floor} bytes); intake would refuse with 503"
        elif usage.free < LOW_SPACE_BYTES:
            verdict = "warn"
            problem = "less than 1 GiB"
        spaces.append(Space(path, tuple(names), usage.free, usage.total, verdict, problem))
    return spaces


def nearest_existing(path: Path) -> Path:
    path = path.resolve()
    while not path.exists() and path != path.parent:
        path = path.parent
    return path
