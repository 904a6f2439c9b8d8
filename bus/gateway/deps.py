"""FastAPI dependencies: the gateway state and the authenticated caller, as ``Annotated`` aliases."""

from __future__ import annotations

from typing import Annotated

from fastapi import Depends, Request
from fastapi.exceptions import RequestValidationError

from docbus.runtime import BusRuntime
from docbus.store.agencies import Agency


async def gateway_state(request: Request) -> BusRuntime:
    state: BusRuntime = request.app.state.gateway
    return state


State = Annotated[BusRuntime, Depends(gateway_state)]


def bearer_key(request: Request) -> str | None:
    header = request.headers.get("authorization")
    if not header:
        return None
    scheme, _, token = header.partition(" ")
    return token.strip() or None if scheme.lower() == "bearer" else None


async def current_agency(request: Request, state: State) -> Agency:
    return await state.directory.authenticate(bearer_key(request), state.client_certificates.sha256(request.scope))


Caller = Annotated[Agency, Depends(current_agency)]


def bad_query(field: str, message: str) -> RequestValidationError:
    """A query parameter FastAPI could not check itself (a time window): answered like its own checks (400, the
    parameter's path and what is wrong)."""
    return RequestValidationError([{"loc": ("query", field), "msg": message, "type": "value_error"}])
