"""RFC 9457 problem details: the one shape every refusal takes, with a stable ``type`` per kind of refusal."""

from __future__ import annotations

import math

import orjson
from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.responses import Response

from docbus.errors import (
    PROBLEM_BASE,
    ClientClosedRequest,
    GatewayBusy,
    RateLimited,
    RequestRejected,
    RequestTimeout,
    StoreUnavailable,
    problem_body,
)

PROBLEM_JSON = "application/problem+json"
# Refusals of a client that stalled or left: the connection is closed with the answer. Other refusals given
# before the whole body was read (413, 503 busy) keep it open: the server reads the rest and throws it away, where
# closing at once would reset a connection the client is still writing to, and lose the answer with it.
CLOSES_CONNECTION = (RequestTimeout, ClientClosedRequest)


def problem_response(exc: RequestRejected, instance: str | None = None) -> Response:
    headers: dict[str, str] = {"WWW-Authenticate": 'Bearer realm="docbus"'} if exc.status == 401 else {}
    body = problem_body(exc, instance)
    if isinstance(exc, RateLimited | GatewayBusy | StoreUnavailable):
        headers["Retry-After"] = str(max(1, math.ceil(exc.retry_after)))  # whole seconds (RFC 9110)
        body["retry_after_seconds"] = round(exc.retry_after, 3)
    if isinstance(exc, CLOSES_CONNECTION):
        headers["Connection"] = "close"
    return Response(
        orjson.dumps(body),
        status_code=exc.status,
        media_type=PROBLEM_JSON,
        headers=headers or None,
    )


def install_problem_handlers(app: FastAPI) -> None:
    """Every error the app can raise leaves it as problem+json, including FastAPI's own 404/405/422."""

    async def rejected(request: Request, exc: Exception) -> Response:
        assert isinstance(exc, RequestRejected)
        if request.url.path.startswith("/dashboard"):  # a browser: a page, and 401 asks for the key
            from docbus.gateway.dashboard import dashboard_problem

            return dashboard_problem(exc)
        return problem_response(exc, request.url.path)

    async def http_error(request: Request, exc: Exception) -> Response:
        assert isinstance(exc, StarletteHTTPException)
        body = {
            "type": PROBLEM_BASE + f"http-{exc.status_code}",
            "title": str(exc.detail),
            "status": exc.status_code,
            "instance": request.url.path,
        }
        return Response(orjson.dumps(body), status_code=exc.status_code, media_type=PROBLEM_JSON)

    async def bad_parameters(request: Request, exc: Exception) -> Response:
        assert isinstance(exc, RequestValidationError)
        errors = [
            {
                "path": "/" + "/".join(str(p) for p in err.get("loc", ())),
                "rule": str(err.get("type", "invalid")),
                "message_en": str(err.get("msg", "")),
                "message_vi": "Tham số yêu cầu không hợp lệ",
            }
            for err in exc.errors()
        ]
        body = {
            "type": PROBLEM_BASE + "invalid-parameters",
            "title": "Invalid request parameters",
            "status": 400,
            "instance": request.url.path,
            "errors": errors,
        }
        return Response(orjson.dumps(body), status_code=400, media_type=PROBLEM_JSON)

    app.add_exception_handler(RequestRejected, rejected)
    app.add_exception_handler(StarletteHTTPException, http_error)
    app.add_exception_handler(RequestValidationError, bad_parameters)
