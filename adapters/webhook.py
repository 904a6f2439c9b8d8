"""Adapter that POSTs each message to an HTTPS endpoint, signed so the receiver can tell it came from docbus.

Settings (``DOCBUS_ADAPTERS__<NAME>__*``): ``url`` (``https://``; plain ``http://`` only to a loopback
address), ``secret`` (the shared HMAC key, at least 16 characters), ``timeout``, ``connect_timeout`` and
``max_response_bytes`` (an answer larger than this, as sent or decoded, is refused: 64 MiB by default), and
``ca_file``, ``cert_file``, ``key_file``, ``key_password`` for a receiver whose certificate comes from its own CA
or that wants a client certificate (:mod:`docbus.adapters.tls`).

The request body is the payload as accepted, with its content type, and these headers::

    X-Docbus-Message-Id   the message id (also sent as Idempotency-Key: receivers dedupe on it)
    X-Docbus-Kind         edoc | status | dossier | dossier-progress
    X-Docbus-Sender       the sending organ id
    X-Docbus-Timestamp    Unix time in seconds when this attempt was signed
    X-Docbus-Signature    sha256=<hex HMAC-SHA256(secret, timestamp + "." + body)>
    X-Docbus-Signature-V2 v2=<hex HMAC-SHA256 over the timestamp, message id, kind, sender, content type and body>

V2 also covers the headers a receiver acts on; ``docbus.connectors.webhooks.verify_webhook`` checks it and the
timestamp's age. The first signature stays for receivers written against it, unless ``signature_v1`` is false
(once every receiver checks V2: a receiver that checks only the first cannot tell a changed header).

A 2xx answer means delivered; a JSON answer may say ``{"id": ..., "duplicate": true}`` (remote id, already
had it). 408, 429, 5xx and transport failures are retriable; any other answer (other 4xx, 3xx) is permanent.
"""

from __future__ import annotations

import hashlib
import hmac
import ipaddress
import time
from typing import Any, ClassVar
from urllib.parse import urlsplit

import httpx
from pydantic import Field, SecretStr, field_validator

from docbus.adapters.base import (
    Adapter,
    AdapterSettings,
    DeliveryResult,
    Outbound,
    PermanentDeliveryError,
    Reach,
    RetriableDeliveryError,
)
from docbus.adapters.tls import TlsClientSettings, probe_endpoint
from docbus.connectors.transport import (
    MAX_RESPONSE_BYTES,
    AiohttpTransport,
    CertificateRefused,
    ResponseTooLarge,
    TlsFailed,
)
from docbus.connectors.webhooks import V2_HEADER, signature_v2

SIGNATURE_PREFIX = "sha256="


def is_loopback(host: str) -> bool:
    if host.lower() == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


def webhook_signature(secret: str, timestamp: str, body: bytes) -> str:
    """``sha256=<hex>`` of HMAC-SHA256 over ``timestamp + "." + body``."""
    digest = hmac.new(secret.encode("utf-8"), timestamp.encode("ascii") + b"." + body, hashlib.sha256)
    return SIGNATURE_PREFIX + digest.hexdigest()


class WebhookSettings(TlsClientSettings):
    url: str
    secret: SecretStr = Field(min_length=16)
    timeout: float = Field(30.0, gt=0)
    connect_timeout: float = Field(5.0, gt=0)
    max_response_bytes: int = Field(MAX_RESPONSE_BYTES, gt=0)  # an answer past it is refused, never held
    signature_v1: bool = True  # X-Docbus-Signature beside V2, for receivers written before V2; False once none is

    @field_validator("url")
    @classmethod
    def _https_or_loopback(cls, value: str) -> str:
        parts = urlsplit(value)
        if parts.scheme == "https" and parts.hostname:
            return value
        if parts.scheme == "http" and parts.hostname and is_loopback(parts.hostname):
            return value
        raise ValueError("must be an https:// URL (http:// is allowed only to a loopback address)")


class WebhookAdapter(Adapter):
    """POSTs messages to a receiver's endpoint with an HMAC signature."""

    name: ClassVar[str] = "webhook"
    Settings: ClassVar[type[AdapterSettings]] = WebhookSettings

    def __init__(self, settings: AdapterSettings, *, transport: httpx.AsyncBaseTransport | None = None) -> None:
        super().__init__(settings)
        if not isinstance(settings, WebhookSettings):
            raise TypeError(f"{type(self).__name__} needs {WebhookSettings.__name__}")
        self._url = settings.url
        self._secret = settings.secret.get_secret_value()
        self._signature_v1 = settings.signature_v1
        self._http = httpx.AsyncClient(
            timeout=httpx.Timeout(settings.timeout, connect=settings.connect_timeout),
            transport=transport
            or AiohttpTransport(max_response_bytes=settings.max_response_bytes, ssl_context=settings.ssl_context()),
            follow_redirects=False,
        )
        self._closed = False

    async def deliver(self, outbound: Outbound) -> DeliveryResult:
        envelope = outbound.envelope
        timestamp = str(int(time.time()))
        headers = {
            "Content-Type": envelope.content_type,
            "Idempotency-Key": envelope.message_id,
            "X-Docbus-Message-Id": envelope.message_id,
            "X-Docbus-Kind": envelope.kind.value,
            "X-Docbus-Sender": envelope.sender,
            "X-Docbus-Timestamp": timestamp,
            V2_HEADER: signature_v2(
                self._secret,
                timestamp=timestamp,
                message_id=envelope.message_id,
                kind=envelope.kind.value,
                sender=envelope.sender,
                content_type=envelope.content_type,
                body=outbound.payload,
            ),
        }
        if self._signature_v1:
            headers["X-Docbus-Signature"] = webhook_signature(self._secret, timestamp, outbound.payload)
        try:
            response = await self._http.post(self._url, content=outbound.payload, headers=headers)
        except httpx.TimeoutException as exc:
            raise RetriableDeliveryError(f"webhook timed out ({type(exc).__name__})") from exc
        except ResponseTooLarge as exc:
            raise RetriableDeliveryError(f"webhook answer refused: {exc}") from exc
        except (CertificateRefused, TlsFailed) as exc:
            raise RetriableDeliveryError(f"webhook: {exc}") from exc
        except httpx.TransportError as exc:
            raise RetriableDeliveryError(f"webhook unreachable ({type(exc).__name__}: {exc})") from exc
        status = response.status_code
        if response.is_success:
            answer = _json_object(response)
            remote_id = answer.get("id")
            return DeliveryResult(
                remote_id=str(remote_id) if remote_id is not None else None,
                duplicate=answer.get("duplicate") is True,
                detail={"status_code": status},
            )
        kind = RetriableDeliveryError if status in (408, 429) or status >= 500 else PermanentDeliveryError
        raise kind(f"webhook answered HTTP {status}", status_code=status, response_excerpt=response.text[:500])

    async def probe(self, timeout: float) -> Reach:
        settings = self.settings
        assert isinstance(settings, WebhookSettings)
        return await probe_endpoint(settings.url, settings.ssl_context(), timeout)

    async def aclose(self) -> None:
        if not self._closed:
            self._closed = True
            await self._http.aclose()


def _json_object(response: httpx.Response) -> dict[str, Any]:
    if "json" not in response.headers.get("content-type", ""):
        return {}
    try:
        parsed = response.json()
    except ValueError:
        return {}
    return parsed if isinstance(parsed, dict) else {}
