"""The Python client an agency system uses to talk to docbus.

    async with AgencyClient("http://127.0.0.1:8080", api_key="dbk_...") as bus:
        receipt = await bus.submit(Path("cong-van.edxml").read_bytes(), "application/xml")

Refusals raise :class:`SubmissionRefused` with the problem details the bus returned.

A submission that meets a passing trouble is tried again: a connection that failed or broke, 429 (the agency's
rate), 502/503/504 (a gateway busy, restarting or behind a proxy that lost it). Every attempt carries the same
``Idempotency-Key`` (one is made when the caller gives none), so when an answer was lost after the bus had stored
the message, the next attempt gets the original receipt back and nothing is stored twice. It waits what
``Retry-After`` says, or backs off exponentially with jitter, within ``attempts`` and ``max_wait``.
"""

from __future__ import annotations

import asyncio
import random
import ssl
import time
import uuid
from pathlib import Path
from typing import Any

import httpx

from docbus.connectors.http import HttpClientOwner
from docbus.tls_client import checking_context

RETRIED_STATUSES = frozenset({429, 502, 503, 504})
FIRST_BACKOFF_SECONDS = 0.5
LONGEST_BACKOFF_SECONDS = 10.0


class SubmissionRefused(Exception):
    """Raised when the bus answers a submission with a problem (4xx/5xx)."""

    def __init__(self, status: int, problem: dict[str, Any]) -> None:
        super().__init__(f"{status} {problem.get('title', '')}: {problem.get('detail', '')}")
        self.status = status
        self.problem = problem


def content_type_for(path: Path) -> str:
    """``.json`` files are dossiers; everything else (``.edxml``, ``.xml``) is XML."""
    return "application/json" if path.suffix.lower() == ".json" else "application/xml"


class AgencyClient(HttpClientOwner):
    """Submits messages and reads their timelines as one agency."""

    def __init__(
        self,
        base_url: str,
        api_key: str,
        *,
        timeout: float = 30.0,
        ca_file: Path | None = None,
        cert_file: Path | None = None,
        key_file: Path | None = None,
        key_password: str | None = None,
    ) -> None:
        """``ca_file``: the CA certificates (PEM) an ``https://`` bus's certificate must chain to, when it is
        not one the system trusts (a province's own CA); the host name is checked either way. ``cert_file`` and
        ``key_file``: the agency system's client certificate, for a bus on mutual TLS, and ``key_password`` when
        the key is encrypted (an encrypted key without it fails at once, saying so, rather than asking)."""
        verify: ssl.SSLContext | bool = True
        if ca_file is not None or cert_file is not None:
            verify = checking_context(ca_file, cert_file=cert_file, key_file=key_file, key_password=key_password)
        self._http = httpx.AsyncClient(
            base_url=base_url, headers={"Authorization": f"Bearer {api_key}"}, timeout=timeout, verify=verify
        )

    async def submit(
        self,
        payload: bytes,
        content_type: str,
        *,
        idempotency_key: str | None = None,
        attempts: int = 5,
        max_wait: float = 60.0,
    ) -> dict[str, Any]:
        """The receipt of ``payload``; retried as the module says. ``attempts=1`` tries once. After the last
        attempt its refusal is raised (:class:`SubmissionRefused`), or its transport error (``httpx``)."""
        headers = {"Content-Type": content_type, "Idempotency-Key": idempotency_key or f"docbus-{uuid.uuid4()}"}
        deadline = time.monotonic() + max_wait
        for attempt in range(1, attempts + 1):
            try:
                response = await self._http.post("/v1/messages", content=payload, headers=headers)
            except httpx.TransportError as exc:
                wait = _backoff(attempt)
                if attempt == attempts or time.monotonic() + wait > deadline or certificate_refused(exc):
                    raise
            else:
                if response.status_code not in RETRIED_STATUSES or attempt == attempts:
                    return self._json_or_raise(response)
                wait = _retry_after(response) or _backoff(attempt)
                if time.monotonic() + wait > deadline:
                    return self._json_or_raise(response)
            await asyncio.sleep(wait)
        raise AssertionError("unreachable: the last attempt returns or raises")

    async def validate(self, payload: bytes, content_type: str) -> dict[str, Any]:
        response = await self._http.post("/v1/validate", content=payload, headers={"Content-Type": content_type})
        return self._json_or_raise(response)

    async def message(self, message_id: str) -> dict[str, Any]:
        return self._json_or_raise(await self._http.get(f"/v1/messages/{message_id}"))

    @staticmethod
    def _json_or_raise(response: httpx.Response) -> dict[str, Any]:
        try:
            body: dict[str, Any] = response.json()
        except ValueError:
            body = {"title": "unreadable answer", "detail": response.text[:500]}
        if response.status_code >= 400:
            raise SubmissionRefused(response.status_code, body)
        return body


def certificate_refused(exc: BaseException) -> bool:
    """Whether a transport error is the bus' TLS certificate failing its check: trying again would fail again."""
    seen: set[int] = set()
    current: BaseException | None = exc
    while current is not None and id(current) not in seen:
        seen.add(id(current))
        if isinstance(current, ssl.SSLCertVerificationError):
            return True
        current = current.__cause__ or current.__context__
    return False


def broken_after_connecting(exc: BaseException) -> bool:
    """Whether a transport error is a connection reset or closed while the request was under way: over TLS 1.3
    this is how a bus on mutual TLS refuses a client without a certificate it accepts (its alert is lost in the
    reset), so it is worth a hint."""
    if isinstance(exc, httpx.ReadError | httpx.WriteError | httpx.RemoteProtocolError):
        return True
    seen: set[int] = set()
    current: BaseException | None = exc
    while current is not None and id(current) not in seen:
        seen.add(id(current))
        if isinstance(current, ConnectionResetError):
            return True
        current = current.__cause__ or current.__context__
    return False


def _backoff(attempt: int) -> float:
    """Full jitter (a random wait up to an exponentially growing bound): clients that failed together do not
    all come back at the same instant."""
    return random.uniform(0, min(LONGEST_BACKOFF_SECONDS, FIRST_BACKOFF_SECONDS * 2 ** (attempt - 1)))


def _retry_after(response: httpx.Response) -> float | None:
    """The wait the bus asked for: its exact ``retry_after_seconds`` when the problem has one, else the
    ``Retry-After`` header in seconds (an HTTP date is left to the backoff)."""
    try:
        exact = response.json().get("retry_after_seconds")
    except (ValueError, AttributeError):
        exact = None
    if isinstance(exact, int | float) and exact >= 0:
        return float(exact)
    header = response.headers.get("retry-after", "")
    return float(header) if header.isdigit() else None
