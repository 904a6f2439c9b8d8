"""The fast path for ``POST /v1/messages``: served in front of FastAPI's routing and dependency injection.

Intake is the one endpoint under load. Profiles of the gateway at saturation showed FastAPI's route matching and
dependency solving costing more CPU than XML validation; this middleware answers intake requests with exactly
the same function the documented route uses (``accept_submission``), and hands every other request to the app.
"""

from __future__ import annotations

import time

from starlette.requests import Request
from starlette.types import ASGIApp, Receive, Scope, Send

from docbus.errors import RequestRejected
from docbus.gateway.deps import bearer_key
from docbus.gateway.problems import problem_response
from docbus.gateway.routes_messages import accept_submission
from docbus.metrics import INTAKE_REJECTED, INTAKE_SECONDS
from docbus.runtime import BusRuntime

INTAKE_PATH = "/v1/messages"


class IntakeFastPath:
    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope["method"] != "POST" or scope["path"] != INTAKE_PATH:
            await self.app(scope, receive, send)
            return
        started = time.perf_counter()
        request = Request(scope, receive)
        state: BusRuntime = scope["app"].state.gateway
        try:
            caller = await state.directory.authenticate(bearer_key(request))
            response = await accept_submission(request, state, caller)
        except RequestRejected as exc:
            INTAKE_REJECTED.labels(status=str(exc.status), type=exc.slug).inc()
            response = problem_response(exc, INTAKE_PATH)
        INTAKE_SECONDS.labels(status=f"{response.status_code // 100}xx").observe(time.perf_counter() - started)
        await response(scope, receive, send)
