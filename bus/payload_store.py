"""Claim check: large payloads live in a payload store, and Kafka records carry only a reference and the hash.

Kafka is tuned for records of kilobytes; an edXML packet with scanned attachments can be 50 MB. Above
``DOCBUS_CLAIM_CHECK_BYTES`` the gateway writes the payload here (fsync'd before the database commit, so a 202
still means durable) and the message row, the outbox and the Kafka record hold ``payload_ref`` instead.
``PayloadStore`` is the seam object storage implements; ``DirectoryPayloadStore`` is the default.
"""

from __future__ import annotations

import asyncio
import os
import re
import uuid
from abc import ABC, abstractmethod
from pathlib import Path

from docbus.durable import fsync_directory

_REF = re.compile(r"^dir:(?P<rel>[0-9]{4}/[0-9]{2}/[0-9]{2}/[0-9A-Z]{26})$")


class PayloadStore(ABC):
    """Durable storage for payloads too large to travel through the broker."""

    @abstractmethod
    async def put(self, message_id: str, data: bytes) -> str:
        """Store ``data`` durably and return its reference."""

    @abstractmethod
    async def get(self, ref: str) -> bytes:
        """Return the bytes behind ``ref``; raises ``KeyError`` when there are none."""

    @abstractmethod
    async def delete(self, ref: str) -> None:
        """Remove the bytes behind ``ref`` (payload retention); nothing happens when they are gone already."""


class DirectoryPayloadStore(PayloadStore):
    """Payloads as files under a root folder, one per message, sharded by day: ``dir:2026/11/27/<ULID>``."""

    def __init__(self, root: Path) -> None:
        self.root = root

    async def put(self, message_id: str, data: bytes) -> str:
        return await asyncio.to_thread(self._put, message_id, data)

    async def get(self, ref: str) -> bytes:
        return await asyncio.to_thread(self.path_of(ref).read_bytes)

    async def delete(self, ref: str) -> None:
        await asyncio.to_thread(self.path_of(ref).unlink, missing_ok=True)

    def path_of(self, ref: str) -> Path:
        match = _REF.match(ref)
        if match is None:
            raise KeyError(ref)
        return self.root / match["rel"]

    def _put(self, message_id: str, data: bytes) -> str:
        from ulid import ULID

        day = ULID.from_str(message_id).datetime.strftime("%Y/%m/%d")
        ref = f"dir:{day}/{message_id}"
        target = self.path_of(ref)
        target.parent.mkdir(parents=True, exist_ok=True)
        temp = target.with_name(f".{target.name}.{uuid.uuid4().hex}.tmp")
        try:
            with temp.open("wb") as handle:
                handle.write(data)
                handle.flush()
                os.fsync(handle.fileno())
            os.replace(temp, target)
        except BaseException:
            temp.unlink(missing_ok=True)  # a full disk must not keep the part that did fit
            raise
        fsync_directory(target.parent)  # the rename itself must survive a crash too
        return ref
