"""Identifiers the bus hands out: message ids (ULID: sortable by time, unique across gateways) and trace ids.

Message ids are made here rather than by a ULID library: intake makes one per message, and the library's
generator objects and per-character encoding came to about 4% of a gateway's CPU at moderate load; this takes
about half its time (2-2.6 us against 4.3-4.5 us an id). The random part is still the operating system's, fetched
in blocks."""

from __future__ import annotations

import math
import os
import secrets
import threading
import time
from datetime import datetime

_CROCKFORD = "0123456789ABCDEFGHJKMNPQRSTVWXYZ"
MESSAGE_ID_PATTERN = "^[0-7][0-9A-HJKMNP-TV-Z]{25}$"  # what new_message_id makes (a ULID's first digit is 0-7)
# Every pair of Crockford digits (10 bits each): the 130 bits of a ULID's 26 characters are 13 of them.
_PAIRS = tuple(a + b for a in _CROCKFORD for b in _CROCKFORD)
_SHIFTS = tuple(range(120, -1, -10))
_LARGEST_RANDOM = (1 << 80) - 1


class _UlidClock:
    """ULIDs that increase within this process: a second id in the same millisecond (or after the wall clock
    stepped back) is the previous one plus one, as in the ULID specification's monotonic mode."""

    _BLOCK = 4096  # random bytes fetched at a time

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._last_ms = 0
        self._last_random = 0
        self._entropy = b""
        self._at = 0

    def next(self) -> int:
        with self._lock:
            ms = time.time_ns() // 1_000_000
            if ms <= self._last_ms:
                ms, random = self._last_ms, self._last_random + 1
                if random > _LARGEST_RANDOM:  # 2^80 ids in one millisecond: borrow the next millisecond
                    ms, random = ms + 1, self._random()
            else:
                random = self._random()
            self._last_ms, self._last_random = ms, random
            return (ms << 80) | random

    def _random(self) -> int:
        if self._at + 10 > len(self._entropy):
            self._entropy, self._at = os.urandom(self._BLOCK), 0
        start, self._at = self._at, self._at + 10
        return int.from_bytes(self._entropy[start : start + 10], "big")


_clock = _UlidClock()


def encode_ulid(value: int) -> str:
    """The 26-character Crockford base32 form of a 128-bit ULID."""
    return "".join([_PAIRS[(value >> shift) & 0x3FF] for shift in _SHIFTS])


def new_message_id() -> str:
    """A 26-character Crockford ULID; lexical order is arrival order, so listings need no extra index."""
    return encode_ulid(_clock.next())


def message_id_bound(at_ms: int, *, upper: bool) -> str:
    """The lowest (or highest) message id a message received at ``at_ms`` (Unix milliseconds) can have: ids
    received between two times lie between their bounds, so a time window is a range of the primary key."""
    return encode_ulid((at_ms << 80) | (_LARGEST_RANDOM if upper else 0))


def first_id_at_or_after(at: datetime) -> str:
    """The lowest message id of a message received at ``at`` or later."""
    return message_id_bound(math.floor(at.timestamp() * 1000), upper=False)


def last_id_before(at: datetime) -> str:
    """The highest message id of a message received before ``at``."""
    return message_id_bound(math.ceil(at.timestamp() * 1000) - 1, upper=True)


def new_trace_id() -> str:
    """A W3C trace-context compatible 128-bit trace id (32 lowercase hex digits)."""
    return secrets.token_hex(16)
