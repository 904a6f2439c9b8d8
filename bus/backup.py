"""``docbus backup DEST``: a consistent copy of a running embedded deployment, restorable as a data directory.

The embedded default keeps everything under one data directory: the SQLite database (WAL), the receipt signing
key, and the payload store's files. Copying those files with ``cp`` while docbus runs can catch the database
between a write to its WAL and a checkpoint, and a copy without the key cannot issue receipts under the same
``kid``. This command:

1. copies the database with SQLite's online backup API, in one step: a read transaction, so the copy is one
   committed state, and writers (WAL) never wait for it;
2. copies the payload store's files **after** that, so every payload the copied database refers to is there
   (a claim-checked payload is written, fsync'd, before its message's transaction commits); files of messages
   accepted meanwhile come along too and are harmless;
3. copies the signing key (mode 0600) and the public keys it replaced, checks the copy (``PRAGMA
   integrity_check`` and every claim-check reference resolving to a file of the recorded size), and writes
   ``BACKUP.json`` last, so a folder without it is not a finished backup.

``DOCBUS_DATA_DIR=DEST docbus serve`` runs on the copy as it is. PostgreSQL deployments back up their database
with PostgreSQL's own tools (``pg_dump``, base backups); this command refuses them rather than copy half.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import sqlite3
from dataclasses import asdict, dataclass
from datetime import UTC, datetime
from pathlib import Path

import orjson
from sqlalchemy.engine import make_url

from docbus.payload_store import DirectoryPayloadStore
from docbus.settings import Settings
from docbus.signing_keys import retired_keys_path

DATABASE_FILE = "docbus.sqlite3"
MANIFEST = "BACKUP.json"


class BackupRefused(Exception):
    """The backup cannot be made as asked; nothing was written (or what was is removed)."""


@dataclass(frozen=True)
class BackupReport:
    destination: str
    taken_at: str
    schema_revision: str | None
    messages: int
    payload_files: int
    claim_checked: int
    database_bytes: int
    database_sha256: str

    def as_dict(self) -> dict[str, object]:
        return asdict(self)


def backup(settings: Settings, destination: Path) -> BackupReport:
    if settings.database_url and not settings.database_url.startswith("sqlite"):
        raise BackupRefused(
            "the database is not the embedded SQLite file: back it up with PostgreSQL's tools (pg_dump)"
        )
    source = _sqlite_path(settings)
    if not source.is_file():
        raise BackupRefused(f"no docbus database at {source}")
    payloads = settings.resolved_payload_dir().resolve()
    if destination.resolve().is_relative_to(payloads):
        raise BackupRefused(f"{destination} is inside the payload store it would copy ({payloads})")
    if destination.exists() and (not destination.is_dir() or any(destination.iterdir())):
        raise BackupRefused(f"{destination} exists and is not an empty folder")
    destination.mkdir(parents=True, exist_ok=True)
    try:
        return _copy(settings, source, destination)
    except BaseException:
        shutil.rmtree(destination, ignore_errors=True)
        raise


def _sqlite_path(settings: Settings) -> Path:
    """The database file, read from the URL the way :class:`~docbus.store.database.Database` reads it."""
    return Path(make_url(settings.resolved_database_url()).database or "")


def _copy(settings: Settings, source: Path, destination: Path) -> BackupReport:
    taken_at = datetime.now(UTC).isoformat()
    copy = destination / DATABASE_FILE
    src, dst = sqlite3.connect(source), sqlite3.connect(copy)
    try:
        src.backup(dst)  # pages=-1: the whole database in one step, one read transaction
        dst.execute("PRAGMA journal_mode=WAL")
    finally:
        src.close()
        dst.close()

    payload_files = _copy_payloads(settings.resolved_payload_dir(), destination / "payloads")
    key = settings.resolved_signing_key_file()
    if key.is_file():
        target = destination / "keys" / "receipt-signing.pem"  # where a data directory keeps it by default
        target.parent.mkdir(mode=0o700)
        shutil.copy2(key, target)
        target.chmod(0o600)
        retired = retired_keys_path(key)
        if retired.is_file():  # the public keys of receipts signed before the last rotation
            shutil.copy2(retired, retired_keys_path(target))

    conn = sqlite3.connect(copy)
    try:
        verdict = conn.execute("PRAGMA integrity_check").fetchone()[0]
        if verdict != "ok":
            raise BackupRefused(f"the copied database failed its integrity check: {verdict}")
        revision = _revision(conn)
        messages = int(conn.execute("SELECT count(*) FROM messages").fetchone()[0])
        refs = conn.execute("SELECT id, payload_ref, size FROM messages WHERE payload_ref IS NOT NULL")
        store = DirectoryPayloadStore(destination / "payloads")
        claim_checked = 0
        for message_id, ref, size in refs:
            path = store.path_of(ref)
            if not path.is_file() or path.stat().st_size != size:
                raise BackupRefused(f"message {message_id}: its payload {ref} is missing or incomplete in the copy")
            claim_checked += 1
    finally:
        conn.close()

    report = BackupReport(
        destination=str(destination.resolve()),
        taken_at=taken_at,
        schema_revision=revision,
        messages=messages,
        payload_files=payload_files,
        claim_checked=claim_checked,
        database_bytes=copy.stat().st_size,
        database_sha256=_sha256(copy),
    )
    (destination / MANIFEST).write_bytes(orjson.dumps(report.as_dict(), option=orjson.OPT_INDENT_2))
    return report


def _copy_payloads(source: Path, target: Path) -> int:
    """Finished payload files only (not the hidden temporaries of writes in progress); returns how many."""
    count = 0
    if not source.is_dir():
        return 0
    for folder, _, names in os.walk(source):
        for name in names:
            if name.startswith("."):
                continue
            origin = Path(folder) / name
            copy = target / origin.relative_to(source)
            copy.parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(origin, copy)
            count += 1
    return count


def _revision(conn: sqlite3.Connection) -> str | None:
    try:
        row = conn.execute("SELECT version_num FROM alembic_version").fetchone()
    except sqlite3.Error:
        return None
    return None if row is None else str(row[0])


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        for chunk in iter(lambda: handle.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()
