"""The receipt-signing key over time: rotating it without orphaning a single receipt already issued.

A receipt is proof an agency may have to show years later, so every public key the bus ever signed with stays
published. ``docbus signing-key rotate`` (:func:`rotate_signing_key`) first adds the current key's public half to
the retired-keys file beside the key (``<key file>.retired.json``, a JWKS whose keys carry ``retired_at``), then
puts a new key in place; both writes are atomic renames and a lock keeps two rotations from interleaving. A
crash between the two leaves the old key current and also listed as retired, which verifies everything.

Every gateway holds a :class:`SigningKeys`: it signs with the key on disk, looking at the files again at most every
``recheck_seconds`` (a rotation reaches running gateways without a restart, and the hot path pays one clock read),
and answers ``GET /v1/keys`` from the files as they are now, so a verifier that fetches the set from any gateway,
even one still signing with the old key for a few more seconds, finds the key of every receipt it holds.
"""

from __future__ import annotations

import contextlib
import fcntl
import logging
import os
import tempfile
import time
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import orjson

from docbus.durable import fsync_directory
from docbus.signing import ReceiptSigner

log = logging.getLogger(__name__)

RECHECK_SECONDS = 5.0


def retired_keys_path(key_path: Path) -> Path:
    return key_path.with_name(key_path.name + ".retired.json")


def read_retired_keys(key_path: Path) -> list[dict[str, Any]]:
    """The public keys the bus signed with before its current one, oldest first (none when never rotated)."""
    path = retired_keys_path(key_path)
    try:
        loaded = orjson.loads(path.read_bytes())
    except FileNotFoundError:
        return []
    keys = loaded.get("keys") if isinstance(loaded, dict) else None
    if not isinstance(keys, list) or not all(isinstance(k, dict) and "kid" in k for k in keys):
        raise ValueError(f"{path} is not a key set (an object with a list of keys, each with a kid)")
    return keys


def rotate_signing_key(key_path: Path) -> tuple[str | None, str]:
    """Retire the current signing key (its public half stays published) and put a new one in its place.

    Returns the retired key's id (``None`` when there was no key yet) and the new one's."""
    key_path.parent.mkdir(parents=True, exist_ok=True)
    with _rotation_lock(key_path):
        retired_kid: str | None = None
        if key_path.exists():
            current = ReceiptSigner.from_file(key_path, create=False)
            retired_kid = current.key_id
            retired = read_retired_keys(key_path)
            if all(k["kid"] != current.key_id for k in retired):
                entry = {**current.jwk(), "retired_at": datetime.now(UTC).isoformat()}
                _write_atomically(retired_keys_path(key_path), orjson.dumps({"keys": [*retired, entry]}), 0o644)
        new = ReceiptSigner.generate()
        _write_atomically(key_path, new.private_pem(), 0o600)
    return retired_kid, new.key_id


class SigningKeys:
    """The signing key a process uses now, and the key set that verifies every receipt the bus has issued."""

    def __init__(self, key_path: Path, *, create: bool = True, recheck_seconds: float = RECHECK_SECONDS) -> None:
        self.path = key_path
        self._recheck_seconds = recheck_seconds
        self._signer = ReceiptSigner.from_file(key_path, create=create)
        try:
            self._retired = read_retired_keys(key_path)
        except (OSError, ValueError) as exc:
            # Receipts are still signed and verify with the current key; only older ones lack theirs until the
            # file is mended (docbus config check fails on it). Refusing to start would stop intake for it.
            log.error("retired signing keys unreadable, not published: %s", exc)
            self._retired = []
        self._seen = self._fingerprint()
        self._next_check = time.monotonic() + recheck_seconds

    def signer(self) -> ReceiptSigner:
        """The key to sign with: the one on disk as of at most ``recheck_seconds`` ago."""
        if time.monotonic() >= self._next_check:
            self.refresh()
        return self._signer

    def jwks(self) -> dict[str, list[dict[str, Any]]]:
        """The current key first, then every retired one, as the files are now."""
        self.refresh()
        current = self._signer.jwk()
        return {"keys": [current, *(k for k in self._retired if k["kid"] != current["kid"])]}

    def refresh(self) -> None:
        """Load the files again if they changed. A file that cannot be read leaves what was loaded in use: a
        gateway keeps signing with a key it knows to be good rather than stopping."""
        self._next_check = time.monotonic() + self._recheck_seconds
        seen = self._fingerprint()
        if seen == self._seen:
            return
        try:
            signer = ReceiptSigner.from_file(self.path, create=False)
            retired = read_retired_keys(self.path)
        except (OSError, ValueError) as exc:
            log.warning("signing key files changed and cannot be read (%s); still using key %s", exc, self.key_id)
            return
        if signer.key_id != self._signer.key_id:
            log.info("signing receipts with key %s from now on (was %s)", signer.key_id, self._signer.key_id)
        self._signer, self._retired, self._seen = signer, retired, seen

    @property
    def key_id(self) -> str:
        return self._signer.key_id

    @property
    def retired(self) -> list[dict[str, Any]]:
        return list(self._retired)

    def _fingerprint(self) -> tuple[tuple[int, int, int] | None, ...]:
        return tuple(_stat(p) for p in (self.path, retired_keys_path(self.path)))


def _stat(path: Path) -> tuple[int, int, int] | None:
    try:
        st = path.stat()
    except FileNotFoundError:
        return None
    return (st.st_ino, st.st_mtime_ns, st.st_size)


@contextlib.contextmanager
def _rotation_lock(key_path: Path) -> Iterator[None]:
    lock_path = key_path.with_name(key_path.name + ".lock")
    with lock_path.open("a") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(lock, fcntl.LOCK_UN)


def _write_atomically(path: Path, data: bytes, mode: int) -> None:
    """Write ``data`` to a new file beside ``path``, flush it to disk, and rename it over ``path``: a reader sees
    the old file or the new one, never half of one, and a crash leaves one of the two."""
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.")
    try:
        os.fchmod(fd, mode)
        with os.fdopen(fd, "wb") as handle:
            handle.write(data)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise
    fsync_directory(path.parent)
