"""The fast path for ``POST /v1/messages``: answered before FastAPI's middleware, routing and dependency injection.

Intake is the one endpoint under load. Profiles of the gateway at saturation showed FastAPI's route matching and
dependency solving costing more CPU than XML validation, and its middleware stack (error pages, telemetry, body
limits: each a layer that wraps every ``send``) another few percent. :class:`GatewayApp` answers intake requests
itself with exactly the function the documented route uses (``accept_submission``), writes the receipt as two
ASGI messages, and hands every other request to FastAPI.
"""

from __future__ import annotations

import time

from fastapi import FastAPI
from starlette.requests import Request
from starlette.types import Message, Receive, Scope, Send

from docbus.errors import InternalError, RequestRejected
from docbus.gateway.deps import bearer_key
from docbus.gateway.problems import problem_response
from docbus.gateway.routes_messages import accept_submission
from docbus.metrics import INTAKE_REJECTED, INTAKE_SECONDS
from docbus.runtime import BusRuntime

INTAKE_PATH = "/v1/messages"


class GatewayApp(FastAPI):
    """FastAPI, with intake served in front of it."""

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http" and scope["method"] == "POST" and scope["path"] == INTAKE_PATH:
            await serve_intake(self.state.gateway, scope, receive, send)
        else:
            await super().__call__(scope, receive, send)


async def serve_intake(state: BusRuntime, scope: Scope, receive: Receive, send: Send) -> None:
    """One intake request, from its headers to its answer; refusals are problem+json like everywhere else."""
    started = time.perf_counter()
    request = Request(scope, receive)
    answered = False

    async def answering(message: Message) -> None:
        nonlocal answered
        answered = True
        await send(message)

    try:
        caller = await state.directory.authenticate(bearer_key(request), state.client_certificates.sha256(scope))
        accepted = await accept_submission(request, state, caller)
        status = 202
        await answering({"type": "http.response.start", "status": 202, "headers": accepted.headers()})
        await send({"type": "http.response.body", "body": accepted.receipt})
    except RequestRejected as exc:
        status = exc.status
        INTAKE_REJECTED.labels(status=str(status), type=exc.slug).inc()
        await problem_response(exc, INTAKE_PATH)(scope, receive, answering)
    except Exception:
        if not answered:  # the client learns that it failed; the traceback goes where the server logs it
            failed = InternalError("the gateway failed to handle this submission; its operators have the details")
            await problem_response(failed, INTAKE_PATH)(scope, receive, send)
        INTAKE_SECONDS.labels(status="5xx").observe(time.perf_counter() - started)
        raise
    # A request cancelled on its way (the server shutting down) answered nothing and is not counted.
    INTAKE_SECONDS.labels(status=f"{status // 100}xx").observe(time.perf_counter() - started)
