"""Identifiers the bus hands out: message ids (ULID: sortable by time, unique across gateways) and trace ids."""

from __future__ import annotations

import secrets

from ulid import ULID


def new_message_id() -> str:
    """A 26-character Crockford ULID; lexical order is arrival order, so listings need no extra index."""
    return str(ULID())


def new_trace_id() -> str:
    """A W3C trace-context compatible 128-bit trace id (32 lowercase hex digits)."""
    return secrets.token_hex(16)
