"""The intake fast path in front of FastAPI: what it answers when something it did not expect goes wrong."""

from __future__ import annotations

import httpx
import pytest

from docbus.errors import PROBLEM_BASE
from docbus.gateway.fast_intake import GatewayApp
from docbus.gateway.forwarded_certificates import ClientCertificates


class _BrokenDirectory:
    async def authenticate(self, key: str | None, client_cert_sha256: str | None = None) -> None:
        raise RuntimeError("the directory is broken")


class _State:
    directory = _BrokenDirectory()
    client_certificates = ClientCertificates()


async def test_an_unexpected_failure_is_a_500_problem_and_still_reaches_the_server_log() -> None:
    app = GatewayApp()
    app.state.gateway = _State()
    transport = httpx.ASGITransport(app=app, raise_app_exceptions=False)
    async with httpx.AsyncClient(transport=transport, base_url="http://docbus") as client:
        response = await client.post("/v1/messages", content=b"<edXML/>", headers={"Authorization": "Bearer k"})
    assert response.status_code == 500
    assert response.headers["content-type"] == "application/problem+json"
    assert response.json() == {
        "type": PROBLEM_BASE + "internal-error",
        "title": "Internal error",
        "status": 500,
        "detail": "the gateway failed to handle this submission; its operators have the details",
        "instance": "/v1/messages",
    }
    assert "directory is broken" not in response.text

    raising = httpx.ASGITransport(app=app)  # the exception goes on to the server, which logs its traceback
    async with httpx.AsyncClient(transport=raising, base_url="http://docbus") as client:
        with pytest.raises(RuntimeError, match="directory is broken"):
            await client.post("/v1/messages", content=b"<edXML/>", headers={"Authorization": "Bearer k"})


async def test_other_requests_go_to_fastapi() -> None:
    app = GatewayApp()
    app.state.gateway = _State()

    @app.get("/v1/messages")
    async def listing() -> dict[str, str]:
        return {"served": "by FastAPI"}

    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url="http://docbus") as client:
        response = await client.get("/v1/messages")
    assert response.json() == {"served": "by FastAPI"}
