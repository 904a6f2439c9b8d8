"""The hot-folder connector: for an agency system that can only export files, docbus takes them from a folder.

Many one-stop and document-management systems of districts and communes cannot call an HTTP API, but can write
each outgoing document or dossier to a folder. ``docbus hot-folder DIR --key KEY`` submits what appears there:

    DIR/                the system writes ``*.edxml``, ``*.xml`` and ``*.json`` files here
    DIR/.processing/    a file being submitted (moved here first, so two connectors never take the same file)
    DIR/sent/DATE/      submitted: the file and ``<file>.receipt.json``, the bus' signed receipt
    DIR/refused/DATE/   refused by the bus: the file and ``<file>.problem.json``, the reason (RFC 9457)

A file is taken once it has not changed for ``settle_seconds`` (a file still being written is left alone), and
names starting with ``.`` or ending in ``.tmp`` or ``.part`` are never taken, so a system that writes a temporary
name and renames it is picked up at once. The oldest file goes first.

One connector serves a folder at a time: it holds a lock on ``DIR/.processing/.lock`` while it runs, and a second
one started on the same folder is refused (:class:`FolderBusy`) instead of submitting files the first is working on.

Nothing is lost or sent twice. A file goes to ``.processing`` by an atomic rename before it is submitted, and leaves
it only after the answer: a connector that crashes in between finds it there at its next start and submits it
again. Each file's ``Idempotency-Key`` is made from its name and content, so that second submission gets the
original receipt back and the bus stores the message once. When the bus cannot be reached (after the client's own
retries) the file waits in ``.processing`` for the next round.
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import fcntl
import hashlib
import logging
import os
import stat
import time
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

import httpx
import orjson

from docbus.connectors.client import AgencyClient, SubmissionRefused, content_type_for

log = logging.getLogger(__name__)

SUFFIXES = (".edxml", ".xml", ".json")
IGNORED_SUFFIXES = (".tmp", ".part")
PROCESSING, SENT, REFUSED = ".processing", "sent", "refused"
LOCK = ".lock"


@dataclass
class RoundReport:
    """What one pass over the folder did."""

    sent: int = 0
    refused: int = 0
    waiting: int = 0  # the bus could not be reached: left in .processing for the next round

    @property
    def clean(self) -> bool:
        return not (self.refused or self.waiting)


def idempotency_key(name: str, payload: bytes) -> str:
    """The same file always gets the same key: a resubmission after a crash is a replay, not a new message."""
    return "hotfolder-" + hashlib.sha256(name.encode() + b"\0" + payload).hexdigest()


class FolderBusy(Exception):
    """Raised when another connector already serves the folder."""


class HotFolder:
    """Submits the files of one folder as one agency."""

    def __init__(self, folder: Path, client: AgencyClient, *, settle_seconds: float = 2.0) -> None:
        self.folder = folder
        self.client = client
        self.settle_seconds = settle_seconds
        for sub in (PROCESSING, SENT, REFUSED):
            (folder / sub).mkdir(parents=True, exist_ok=True)

    @contextlib.contextmanager
    def served(self) -> Iterator[None]:
        """Hold the folder's lock for the block; :class:`FolderBusy` if another connector holds it."""
        with (self.folder / PROCESSING / LOCK).open("a") as lock:
            try:
                fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                raise FolderBusy(f"another connector is serving {self.folder}") from None
            try:
                yield
            finally:
                fcntl.flock(lock, fcntl.LOCK_UN)

    def ready(self) -> list[Path]:
        """Files to take: unfinished submissions first (a crash left them), then settled new files, oldest first."""
        pending = sorted((p for p in (self.folder / PROCESSING).iterdir() if p.name != LOCK), key=_mtime)
        now = time.time()
        new = [
            path
            for path in self.folder.iterdir()
            if _is_file_or_link(path)
            and path.suffix.lower() in SUFFIXES
            and not path.name.startswith(".")
            and not path.name.lower().endswith(IGNORED_SUFFIXES)
            and now - _mtime(path) >= self.settle_seconds
        ]
        return [p for p in pending if _is_file_or_link(p)] + sorted(new, key=_mtime)

    async def run_once(self) -> RoundReport:
        report = RoundReport()
        for path in self.ready():
            claimed = self._claim(path)
            if claimed is None:
                continue  # another connector took it, or the system removed it
            outcome = await self._submit(claimed)
            setattr(report, outcome, getattr(report, outcome) + 1)
            if outcome == "waiting":
                break  # the bus is away: the rest waits too, in order
        return report

    async def run(self, stop: asyncio.Event, interval: float = 1.0) -> None:
        """Rounds until ``stop`` is set; a round that fails is logged and the next one tries again."""
        while not stop.is_set():
            try:
                report = await self.run_once()
                if report.sent or report.refused:
                    log.info("hot folder %s: %d sent, %d refused", self.folder, report.sent, report.refused)
            except OSError as exc:
                log.warning("hot folder %s: %s", self.folder, exc)
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), timeout=interval)

    def _claim(self, path: Path) -> Path | None:
        if path.parent.name == PROCESSING:
            return path
        target = self.folder / PROCESSING / path.name
        if target.exists():  # a file of the same name is still being submitted: wait for it to finish
            return None
        try:
            os.rename(path, target)  # atomic on one file system: one claimant wins
        except FileNotFoundError:
            return None
        return target

    async def _submit(self, path: Path) -> str:
        try:
            payload = await asyncio.to_thread(_read_regular_file, path)  # up to the bus' 64 MB: off the event loop
        except NotRegularFile as exc:
            problem: dict[str, object] = {"title": "Not submitted: not a regular file", "detail": str(exc)}
            self._file_away(path, REFUSED, ".problem.json", problem)
            log.warning("hot folder: %s", exc)
            return "refused"
        try:
            receipt = await self.client.submit(
                payload, content_type_for(path), idempotency_key=idempotency_key(path.name, payload)
            )
        except SubmissionRefused as exc:
            if exc.status == 429 or exc.status >= 500:  # still busy or broken after the client's retries
                log.warning("hot folder: %s waits: the bus answered %d after retries", path.name, exc.status)
                return "waiting"
            self._file_away(path, REFUSED, ".problem.json", exc.problem)
            log.warning("hot folder: %s refused: %s", path.name, exc)
            return "refused"
        except httpx.TransportError as exc:
            log.warning("hot folder: %s waits: the bus cannot be reached (%r)", path.name, exc)
            return "waiting"
        self._file_away(path, SENT, ".receipt.json", receipt)
        return "sent"

    def _file_away(self, path: Path, where: str, suffix: str, answer: dict[str, object]) -> None:
        """The answer first, then the file: a crash between leaves the file in .processing (submitted again,
        answered again), never a file without its answer."""
        day = datetime.now(UTC).strftime("%Y-%m-%d")
        folder = self.folder / where / day
        folder.mkdir(parents=True, exist_ok=True)
        target = _free_name(folder / path.name, suffix)
        answer_path = target.with_name(target.name + suffix)
        answer_path.write_bytes(orjson.dumps(answer, option=orjson.OPT_INDENT_2))
        os.rename(path, target)


def _free_name(target: Path, suffix: str) -> Path:
    """``target``, or ``name.2.edxml``, ``name.3.edxml`` … when a file of that name was already filed that day."""
    candidate, n = target, 1
    while candidate.exists() or candidate.with_name(candidate.name + suffix).exists():
        n += 1
        candidate = target.with_name(f"{target.stem}.{n}{target.suffix}")
    return candidate


class NotRegularFile(Exception):
    """Raised for a symbolic link (or anything but a plain file) in the folder."""


def _read_regular_file(path: Path) -> bytes:
    """The file's bytes, never through a symbolic link: the connector may read files (its own settings, other
    agencies' keys) that the system writing to the folder may not, and a link must not make it submit them."""
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW)
    except OSError as exc:
        if exc.errno == errno.ELOOP:
            raise NotRegularFile(f"{path.name} is a symbolic link: only files written in the folder are sent") from None
        raise
    with os.fdopen(fd, "rb") as handle:
        if not stat.S_ISREG(os.fstat(handle.fileno()).st_mode):
            raise NotRegularFile(f"{path.name} is not a regular file")
        return handle.read()


def _is_file_or_link(path: Path) -> bool:
    """Regular files are taken; links are taken too, to be refused and filed away rather than left to pile up."""
    try:
        mode = path.lstat().st_mode
    except FileNotFoundError:
        return False
    return stat.S_ISREG(mode) or stat.S_ISLNK(mode)


def _mtime(path: Path) -> float:
    try:
        return path.lstat().st_mtime
    except FileNotFoundError:
        return 0.0
