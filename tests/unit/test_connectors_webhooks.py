"""Receiving docbus' webhooks: a request the adapter signed verifies; any change to what it signed, another
secret, or an old timestamp does not."""

from __future__ import annotations

import hashlib
import hmac
import time

import httpx
import pytest

from docbus.connectors.webhooks import WebhookRejected, signature_v2, verify_webhook

from .test_adapters_webhook import PAYLOAD, SECRET, adapter_answering, outbound


async def signed_request() -> httpx.Request:
    seen: list[httpx.Request] = []

    def answer(request: httpx.Request) -> httpx.Response:
        seen.append(request)
        return httpx.Response(200)

    adapter = adapter_answering(answer)
    await adapter.deliver(outbound())
    await adapter.aclose()
    return seen[0]


async def test_what_the_adapter_sends_verifies_and_says_what_came() -> None:
    request = await signed_request()
    message = verify_webhook(dict(request.headers), request.content, SECRET)
    assert message.message_id == "01JDOCBUSWEBHOOK0000000001"
    assert (message.kind, message.sender, message.content_type) == ("status", "000.00.00.H41", "application/xml")
    assert message.body == PAYLOAD
    assert abs(message.timestamp - time.time()) < 5
    # The first signature, over the timestamp and the body, is still sent for receivers written against it.
    signed = request.headers["x-docbus-timestamp"].encode() + b"." + PAYLOAD
    v1 = hmac.new(SECRET.encode(), signed, hashlib.sha256).hexdigest()
    assert request.headers["x-docbus-signature"] == f"sha256={v1}"


@pytest.mark.parametrize(
    ("header", "value"),
    [
        ("X-Docbus-Message-Id", "01JDOCBUSWEBHOOK0000000002"),  # would pass a receiver's deduplication
        ("X-Docbus-Sender", "000.00.00.G22"),
        ("X-Docbus-Kind", "edoc"),
        ("Content-Type", "application/json"),
        ("X-Docbus-Timestamp", "one second later"),  # made from the request's own timestamp below
    ],
)
async def test_changing_any_signed_header_is_refused(header: str, value: str) -> None:
    request = await signed_request()
    if header == "X-Docbus-Timestamp":
        value = str(int(request.headers["x-docbus-timestamp"]) + 1)
    headers = {**{k.title(): v for k, v in request.headers.items()}, header: value}
    with pytest.raises(WebhookRejected, match="signature does not match"):
        verify_webhook(headers, request.content, SECRET)


async def test_another_body_or_secret_is_refused() -> None:
    request = await signed_request()
    headers = dict(request.headers)
    with pytest.raises(WebhookRejected, match="signature does not match"):
        verify_webhook(headers, request.content + b" ", SECRET)
    with pytest.raises(WebhookRejected, match="signature does not match"):
        verify_webhook(headers, request.content, "another-shared-secret")


async def test_an_old_or_future_request_is_refused_even_when_signed() -> None:
    request = await signed_request()
    headers = dict(request.headers)
    sent = int(headers["x-docbus-timestamp"])
    assert verify_webhook(headers, request.content, SECRET, now=sent + 299).timestamp == sent
    with pytest.raises(WebhookRejected, match="at most 300 s"):
        verify_webhook(headers, request.content, SECRET, now=sent + 301)
    with pytest.raises(WebhookRejected, match="at most 60 s"):
        verify_webhook(headers, request.content, SECRET, now=sent - 61, tolerance_seconds=60)


@pytest.mark.parametrize("missing", ["x-docbus-signature-v2", "x-docbus-sender", "content-type"])
async def test_a_missing_header_is_named(missing: str) -> None:
    request = await signed_request()
    headers = {k: v for k, v in request.headers.items() if k != missing}
    with pytest.raises(WebhookRejected, match=f"(?i)no {missing} header"):
        verify_webhook(headers, request.content, SECRET)


def test_fields_cannot_be_shifted_across_lines() -> None:
    with pytest.raises(ValueError, match="line break"):
        signature_v2(
            SECRET, timestamp="1", message_id="a\nb", kind="edoc", sender="x", content_type="text/xml", body=b""
        )
    headers = {
        "X-Docbus-Signature-V2": "v2=00",
        "X-Docbus-Timestamp": "1",
        "X-Docbus-Message-Id": "a\nb",
        "X-Docbus-Kind": "edoc",
        "X-Docbus-Sender": "x",
        "Content-Type": "text/xml",
    }
    with pytest.raises(WebhookRejected, match="line break"):
        verify_webhook(headers, b"", SECRET)
