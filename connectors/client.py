"""The Python client an agency system uses to talk to docbus.

    async with AgencyClient("http://127.0.0.1:8080", api_key="dbk_...") as bus:
        receipt = await bus.submit(Path("cong-van.edxml").read_bytes(), "application/xml")

Refusals raise :class:`SubmissionRefused` with the problem details the bus returned.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import httpx

from docbus.connectors.http import HttpClientOwner


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

    def __init__(self, base_url: str, api_key: str, *, timeout: float = 30.0) -> None:
        self._http = httpx.AsyncClient(
            base_url=base_url, headers={"Authorization": f"Bearer {api_key}"}, timeout=timeout
        )

    async def submit(self, payload: bytes, content_type: str, *, idempotency_key: str | None = None) -> dict[str, Any]:
        headers = {"Content-Type": content_type}
        if idempotency_key:
            headers["Idempotency-Key"] = idempotency_key
        response = await self._http.post("/v1/messages", content=payload, headers=headers)
        return self._json_or_raise(response)

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
