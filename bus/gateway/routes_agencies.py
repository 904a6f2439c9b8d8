"""``/v1/agencies``: the agency directory as operators see it, and suspending or resuming an agency's credential.

Keys are never listed (they are shown once, when issued). Registering agencies and issuing keys stay with the
``docbus agency`` command on the bus' own machines: an operator credential that leaked must not be able to mint
credentials. Suspending is here because it is what an operator on watch needs at once: stop a system flooding the
bus, or a key under suspicion, without a shell on the server. Every change to an entry, from here or from the
command, is kept in the agency's history (``/v1/agencies/{organ_id}/history``).
"""

from __future__ import annotations

from typing import Annotated

import orjson
from fastapi import APIRouter, Body
from starlette.responses import Response

from docbus.errors import Forbidden, NotFound, ValidationFailed
from docbus.gateway.deps import Caller, State
from docbus.store.agencies import Agency, Role

router = APIRouter(prefix="/v1/agencies", tags=["agencies"])


def _operator(caller: Agency) -> None:
    if caller.role is not Role.OPERATOR:
        raise Forbidden("only operator credentials may do this")


def _agency_response(agency: Agency) -> Response:
    return Response(orjson.dumps(agency.as_dict()), media_type="application/json")


@router.get("")
async def list_agencies(state: State, caller: Caller) -> Response:
    """Every registered agency with its role, key prefix, key rotation and suspension (operators only)."""
    _operator(caller)
    items = [agency.as_dict() for agency in await state.directory.list()]
    return Response(orjson.dumps({"items": items}), media_type="application/json")


@router.get("/{organ_id}")
async def show_agency(organ_id: str, state: State, caller: Caller) -> Response:
    _operator(caller)
    return _agency_response(await _registered(state, organ_id))


@router.get("/{organ_id}/history")
async def agency_history(organ_id: str, state: State, caller: Caller) -> Response:
    """What was done to the agency's entry, oldest first: registered, key rotated, suspended, resumed, certificate
    bound or unbound, each with its time and actor (operators only; ``docbus audit verify`` checks its chain)."""
    _operator(caller)
    await _registered(state, organ_id)
    items = [change.as_dict() for change in await state.directory.history(organ_id)]
    return Response(orjson.dumps({"items": items}), media_type="application/json")


@router.post("/{organ_id}/suspend")
async def suspend_agency(
    organ_id: str,
    state: State,
    caller: Caller,
    reason: Annotated[str, Body(embed=True, description="told to the agency with every refusal (1-500 characters)")],
) -> Response:
    """Refuse the agency's key (403 with the reason) until it is resumed; gateways that cached the credential
    follow within ``DOCBUS_CREDENTIAL_CACHE_SECONDS``. An operator cannot suspend its own credential."""
    _operator(caller)
    if organ_id == caller.organ_id:
        raise ValidationFailed("an operator cannot suspend its own credential")
    await _registered(state, organ_id)
    await state.directory.suspend(organ_id, reason, by=caller.organ_id)
    return _agency_response(await _registered(state, organ_id))


@router.post("/{organ_id}/resume")
async def resume_agency(organ_id: str, state: State, caller: Caller) -> Response:
    """Accept the agency's key again."""
    _operator(caller)
    await _registered(state, organ_id)
    await state.directory.resume(organ_id, by=caller.organ_id)
    return _agency_response(await _registered(state, organ_id))


async def _registered(state: State, organ_id: str) -> Agency:
    agency = await state.directory.get(organ_id)
    if agency is None:
        raise NotFound(f"no agency {organ_id} is registered")
    return agency
