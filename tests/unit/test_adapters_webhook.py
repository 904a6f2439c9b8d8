"""The webhook adapter: URL rules, the signed request it sends, and how answers map to outcomes."""

from __future__ import annotations

import hashlib
import hmac
import time
from collections.abc import Callable
from datetime import UTC, datetime

import httpx
import pytest
from pydantic import ValidationError

from docbus.adapters.base import Outbound, PermanentDeliveryError, RetriableDeliveryError
from docbus.adapters.webhook import WebhookAdapter, WebhookSettings
from docbus.connectors.webhooks import verify_webhook
from docbus.envelope import Envelope, MessageKind, SchemaRef

SECRET = "webhook-shared-secret"
PAYLOAD = "<edXML>trích yếu</edXML>".encode()


def outbound() -> Outbound:
    envelope = Envelope(
        message_id="01JDOCBUSWEBHOOK0000000001",
        kind=MessageKind.STATUS,
        schema=SchemaRef("qcvn102.status", "2016.1"),
        sender="000.00.00.H41",
        receivers=("000.00.00.G22",),
        business_id="000.00.00.G22,2015/09/30,7816/VPCP-TTĐT",
        sha256=hashlib.sha256(PAYLOAD).hexdigest(),
        size=len(PAYLOAD),
        received_at=datetime.now(UTC),
        content_type="application/xml",
        idempotency_key=None,
        trace_id="0" * 32,
    )
    return Outbound(envelope, PAYLOAD, destination="hook", receivers=("000.00.00.G22",))


def adapter_answering(answer: Callable[[httpx.Request], httpx.Response], **extra: object) -> WebhookAdapter:
    settings = WebhookSettings.model_validate({"url": "https://127.0.0.1/hook", "secret": SECRET, **extra})
    return WebhookAdapter(settings, transport=httpx.MockTransport(answer))


@pytest.mark.parametrize(
    "url",
    [
        "https://agency.example/hook",
        "http://127.0.0.1:8080/hook",
        "http://127.8.9.10/x",
        "http://[::1]:9/x",
        "http://localhost/x",
    ],
)
def test_https_anywhere_and_http_only_to_loopback(url: str) -> None:
    assert WebhookSettings.model_validate({"url": url, "secret": SECRET}).url == url


@pytest.mark.parametrize(
    "url", ["http://agency.example/hook", "http://192.0.2.1/hook", "ftp://127.0.0.1/x", "https:///nohost", "hook"]
)
def test_other_urls_are_refused(url: str) -> None:
    with pytest.raises(ValidationError, match="https://"):
        WebhookSettings.model_validate({"url": url, "secret": SECRET})


def test_the_secret_must_not_be_trivial() -> None:
    with pytest.raises(ValidationError):
        WebhookSettings.model_validate({"url": "https://127.0.0.1/x", "secret": "short"})


async def test_the_request_is_signed_over_timestamp_and_body() -> None:
    seen: list[httpx.Request] = []

    def answer(request: httpx.Request) -> httpx.Response:
        seen.append(request)
        return httpx.Response(200, json={"id": "remote-7", "duplicate": False})

    adapter = adapter_answering(answer)
    result = await adapter.deliver(outbound())
    await adapter.aclose()

    (request,) = seen
    assert request.method == "POST" and str(request.url) == "https://127.0.0.1/hook"
    assert request.content == PAYLOAD
    headers = request.headers
    assert headers["x-docbus-message-id"] == headers["idempotency-key"] == "01JDOCBUSWEBHOOK0000000001"
    assert headers["x-docbus-kind"] == "status"
    assert headers["x-docbus-sender"] == "000.00.00.H41"
    assert headers["content-type"] == "application/xml"
    assert abs(int(headers["x-docbus-timestamp"]) - time.time()) < 5
    signed = headers["x-docbus-timestamp"].encode() + b"." + PAYLOAD
    expected = hmac.new(SECRET.encode(), signed, hashlib.sha256).hexdigest()
    assert headers["x-docbus-signature"] == f"sha256={expected}"
    assert (result.remote_id, result.duplicate) == ("remote-7", False)


async def test_the_first_signature_can_be_left_out() -> None:
    seen: list[httpx.Request] = []

    def answer(request: httpx.Request) -> httpx.Response:
        seen.append(request)
        return httpx.Response(204)

    adapter = adapter_answering(answer, signature_v1=False)
    await adapter.deliver(outbound())
    await adapter.aclose()
    (request,) = seen
    assert "x-docbus-signature" not in request.headers
    headers = {name: request.headers[name] for name in request.headers}
    assert verify_webhook(headers, request.content, SECRET).message_id == "01JDOCBUSWEBHOOK0000000001"


@pytest.mark.parametrize(
    ("response", "remote_id", "duplicate"),
    [
        (httpx.Response(200, json={"id": "a", "duplicate": True}), "a", True),
        (httpx.Response(201, json={"id": 17}), "17", False),
        (httpx.Response(202, text="accepted"), None, False),
        (httpx.Response(204), None, False),
    ],
)
async def test_any_2xx_is_delivered(response: httpx.Response, remote_id: str | None, duplicate: bool) -> None:
    adapter = adapter_answering(lambda request: response)
    result = await adapter.deliver(outbound())
    assert (result.remote_id, result.duplicate) == (remote_id, duplicate)
    await adapter.aclose()


@pytest.mark.parametrize(
    ("status", "error"),
    [
        (408, RetriableDeliveryError),
        (429, RetriableDeliveryError),
        (500, RetriableDeliveryError),
        (502, RetriableDeliveryError),
        (503, RetriableDeliveryError),
        (400, PermanentDeliveryError),
        (401, PermanentDeliveryError),
        (403, PermanentDeliveryError),
        (404, PermanentDeliveryError),
        (409, PermanentDeliveryError),
        (422, PermanentDeliveryError),
        (301, PermanentDeliveryError),
    ],
)
async def test_answers_map_to_retriable_or_permanent(status: int, error: type[Exception]) -> None:
    adapter = adapter_answering(lambda request: httpx.Response(status, text="nope"))
    with pytest.raises(error) as caught:
        await adapter.deliver(outbound())
    assert getattr(caught.value, "status_code", None) == status
    assert getattr(caught.value, "response_excerpt", None) == "nope"
    await adapter.aclose()


@pytest.mark.parametrize("failure", [httpx.ConnectError("refused"), httpx.ReadTimeout("slow")])
async def test_transport_failures_are_retriable(failure: Exception) -> None:
    def answer(request: httpx.Request) -> httpx.Response:
        raise failure

    adapter = adapter_answering(answer)
    with pytest.raises(RetriableDeliveryError):
        await adapter.deliver(outbound())
    await adapter.aclose()
    await adapter.aclose()
