"""For agency systems that receive docbus' webhooks: check that a request came from the bus, unaltered and fresh.

The webhook adapter signs each attempt twice. ``X-Docbus-Signature`` (``sha256=…``, HMAC-SHA256 over the timestamp
and the body) is what the first receivers implemented, and stays. ``X-Docbus-Signature-V2`` also covers the
headers a receiver acts on, so that none of them can be changed under a valid signature: the message id (which a
receiver deduplicates on), the kind, the sending agency and the content type. :func:`verify_webhook` checks V2 and
the timestamp's age, and returns what the headers say::

    from docbus.connectors.webhooks import WebhookRejected, verify_webhook

    try:
        message = verify_webhook(request.headers, body, secret)
    except WebhookRejected as exc:
        return 401, str(exc)
    if already_stored(message.message_id):   # docbus delivers at least once: the same message may come again
        return 200, {"id": message.message_id, "duplicate": True}

A request whose timestamp is older (or newer) than ``tolerance_seconds`` is refused even with a valid signature, so
a copied request cannot be replayed later; within the window, deduplicating on the message id does the rest.
"""

from __future__ import annotations

import hashlib
import hmac
import time
from collections.abc import Mapping
from dataclasses import dataclass

V2_HEADER = "X-Docbus-Signature-V2"
V2_PREFIX = "v2="
_V2_LABEL = b"docbus-webhook-v2"
DEFAULT_TOLERANCE_SECONDS = 300.0
SIGNED_HEADERS = ("X-Docbus-Timestamp", "X-Docbus-Message-Id", "X-Docbus-Kind", "X-Docbus-Sender", "Content-Type")


class WebhookRejected(ValueError):
    """The request is not a fresh, unaltered webhook from this bus; the message says why."""


@dataclass(frozen=True)
class WebhookMessage:
    """What a verified webhook request carries."""

    message_id: str
    kind: str
    sender: str
    content_type: str
    timestamp: int
    body: bytes


def signature_v2(
    secret: str, *, timestamp: str, message_id: str, kind: str, sender: str, content_type: str, body: bytes
) -> str:
    """``v2=<hex>``: HMAC-SHA256 over a label, the signed headers' values and the body, one per line. None of the
    values can hold a line break (ids, a kind, a timestamp, a media type), so the fields cannot be shifted."""
    fields = (timestamp, message_id, kind, sender, content_type)
    if any("\n" in value or "\r" in value for value in fields):
        raise ValueError("a signed header value cannot hold a line break")
    signed = b"\n".join([_V2_LABEL, *(value.encode("utf-8") for value in fields), body])
    return V2_PREFIX + hmac.new(secret.encode("utf-8"), signed, hashlib.sha256).hexdigest()


def verify_webhook(
    headers: Mapping[str, str],
    body: bytes,
    secret: str,
    *,
    tolerance_seconds: float = DEFAULT_TOLERANCE_SECONDS,
    now: float | None = None,
) -> WebhookMessage:
    """The message, when ``X-Docbus-Signature-V2`` is right for these headers and body and the timestamp is within
    ``tolerance_seconds`` of ``now``; :class:`WebhookRejected` otherwise. Header names match in any case."""
    lowered = {name.lower(): value for name, value in headers.items()}

    def header(name: str) -> str:
        value = lowered.get(name.lower())
        if value is None:
            raise WebhookRejected(f"no {name} header")
        return value

    given = header(V2_HEADER)
    timestamp, message_id, kind, sender, content_type = (header(name) for name in SIGNED_HEADERS)
    try:
        expected = signature_v2(
            secret,
            timestamp=timestamp,
            message_id=message_id,
            kind=kind,
            sender=sender,
            content_type=content_type,
            body=body,
        )
    except ValueError as exc:
        raise WebhookRejected(str(exc)) from None
    if not hmac.compare_digest(given.strip().encode("utf-8", "replace"), expected.encode("ascii")):
        raise WebhookRejected("the signature does not match these headers and this body (or another secret)")
    try:
        sent_at = int(timestamp)
    except ValueError:
        raise WebhookRejected(f"X-Docbus-Timestamp is not a Unix time: {timestamp!r}") from None
    age = (time.time() if now is None else now) - sent_at
    if abs(age) > tolerance_seconds:
        raise WebhookRejected(f"signed {age:.0f} s from now; at most {tolerance_seconds:g} s either way is accepted")
    return WebhookMessage(message_id, kind, sender, content_type, sent_at, body)
