"""Adapter that drops each message as a file, for systems that only read a shared folder.

Settings (``DOCBUS_ADAPTERS__<NAME>__*``): ``directory`` (must exist: a missing directory, e.g. an unmounted
share, is a retriable failure, never silently re-created) and ``fsync`` (default on).

Layout: ``<directory>/<sender organ id>/<message id>.edxml`` (``.json`` for JSON payloads) and beside it
``<message id>.meta.json``, the envelope as JSON. Both are written atomically — a hidden temporary file in the
same folder, fsync'd, then linked into place, then the folder fsync'd — sidecar first, so a reader that sees the
payload also sees its sidecar. The payload is linked without replacing: a message delivered again (same message
id) leaves the first copy alone and is reported as ``duplicate=True``.
"""

from __future__ import annotations

import asyncio
import errno
import os
import re
import secrets
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, ClassVar

import orjson

from docbus.adapters.base import (
    Adapter,
    AdapterSettings,
    DeliveryResult,
    Outbound,
    PermanentDeliveryError,
    Reach,
    RetriableDeliveryError,
)
from docbus.durable import fsync_directory

SAFE_NAME = re.compile(r"[A-Za-z0-9_-][A-Za-z0-9._-]{0,199}")
# Errors of file systems that cannot hard-link (some network shares): fall back to check-then-rename.
NO_LINK_ERRNOS = frozenset({errno.EPERM, errno.ENOTSUP, errno.EOPNOTSUPP, errno.ENOSYS, errno.EXDEV})


class FileSettings(AdapterSettings):
    directory: Path
    fsync: bool = True


class FileAdapter(Adapter):
    """Writes each message to ``<directory>/<sender>/<message id>.<edxml|json>`` with a ``.meta.json`` sidecar."""

    name: ClassVar[str] = "file"
    Settings: ClassVar[type[AdapterSettings]] = FileSettings

    def __init__(self, settings: AdapterSettings) -> None:
        super().__init__(settings)
        if not isinstance(settings, FileSettings):
            raise TypeError(f"{type(self).__name__} needs {FileSettings.__name__}")
        self.directory = settings.directory
        self.fsync = settings.fsync

    async def probe(self, timeout: float) -> Reach:
        if not self.directory.is_dir():
            return Reach(False, f"{self.directory} is not a directory here (a share not mounted?)")
        if not os.access(self.directory, os.W_OK | os.X_OK):
            return Reach(False, f"{self.directory}: this process may not write there", refused=True)
        return Reach(True, f"{self.directory} is a directory this process may write to")

    async def deliver(self, outbound: Outbound) -> DeliveryResult:
        return await asyncio.to_thread(self._write, outbound)

    def _write(self, outbound: Outbound) -> DeliveryResult:
        envelope = outbound.envelope
        sender = _safe(envelope.sender, "sender organ id")
        message_id = _safe(envelope.message_id, "message id")
        extension = "json" if "json" in envelope.content_type.lower() else "edxml"
        relative = f"{sender}/{message_id}.{extension}"
        folder = self.directory / sender
        target = folder / f"{message_id}.{extension}"
        if not self.directory.is_dir():
            raise RetriableDeliveryError(f"drop directory {self.directory} is not available")
        if target.exists():
            return DeliveryResult(remote_id=relative, duplicate=True)
        try:
            new_folder = not folder.is_dir()
            folder.mkdir(exist_ok=True)
            self._place(folder / f"{message_id}.meta.json", _sidecar(outbound), replace=True)
            created = self._place(target, outbound.payload, replace=False)
            if self.fsync:
                fsync_directory(folder)
                if new_folder:
                    fsync_directory(self.directory)
        except OSError as exc:
            raise RetriableDeliveryError(f"could not write {relative}: {exc}") from exc
        return DeliveryResult(remote_id=relative, duplicate=not created, detail={"path": str(target)})

    def _place(self, target: Path, data: bytes, *, replace: bool) -> bool:
        """Write ``data`` to ``target`` atomically; ``False`` if ``target`` existed and ``replace`` is off."""
        temporary = target.with_name(f".{target.name}.{secrets.token_hex(6)}.tmp")
        try:
            with open(temporary, "xb") as handle:
                handle.write(data)
                handle.flush()
                if self.fsync:
                    os.fsync(handle.fileno())
            if replace:
                os.replace(temporary, target)
                return True
            try:
                os.link(temporary, target)
            except FileExistsError:
                return False
            except OSError as exc:
                if exc.errno not in NO_LINK_ERRNOS:
                    raise
                if target.exists():
                    return False
                os.replace(temporary, target)
            return True
        finally:
            temporary.unlink(missing_ok=True)


def _safe(value: str, what: str) -> str:
    """A value used as a path segment: letters, digits, ``.``, ``_``, ``-``; never a dot name."""
    if not SAFE_NAME.fullmatch(value):
        raise PermanentDeliveryError(f"{what} {value!r} cannot be used as a file name")
    return value


def _sidecar(outbound: Outbound) -> bytes:
    envelope = outbound.envelope
    meta: dict[str, Any] = {
        "message_id": envelope.message_id,
        "kind": envelope.kind.value,
        "schema": {"id": envelope.schema.id, "version": envelope.schema.version},
        "sender": envelope.sender,
        "receivers": list(envelope.receivers),
        "destination_receivers": list(outbound.receivers),
        "business_id": envelope.business_id,
        "sha256": envelope.sha256,
        "size": envelope.size,
        "received_at": envelope.received_at.isoformat(),
        "content_type": envelope.content_type,
        "idempotency_key": envelope.idempotency_key,
        "trace_id": envelope.trace_id,
        "response_for": envelope.response_for,
        "status_code": envelope.status_code,
        "destination": outbound.destination,
        "attempt": outbound.attempt,
        "written_at": datetime.now(UTC).isoformat(),
    }
    return orjson.dumps(meta, option=orjson.OPT_INDENT_2)
