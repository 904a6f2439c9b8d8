"""What the bus publishes about itself: schemas, signing keys, health, readiness and metrics."""

from __future__ import annotations

import asyncio

import orjson
from fastapi import APIRouter
from prometheus_client import CONTENT_TYPE_LATEST
from starlette.responses import Response

from docbus.errors import NotFound
from docbus.free_space import free_space
from docbus.gateway.deps import State
from docbus.metrics import exposition
from docbus.runtime import BusRuntime
from docbus.settings import Settings

router = APIRouter(tags=["meta"])


@router.get("/v1/schemas")
async def list_schemas(state: State) -> Response:
    """Every schema the bus validates against, with id, version and download link."""
    items = []
    for info in state.registry.list():
        items.append(
            {
                "id": info.id,
                "version": info.version,
                "kind": info.kind.value,
                "title": info.title,
                "media_type": info.media_type,
                "sha256": info.sha256,
                "href": f"/v1/schemas/{info.id}/{info.version}",
            }
        )
    return Response(orjson.dumps({"items": items}), media_type="application/json")


@router.get("/v1/schemas/{schema_id}/{version}")
async def download_schema(schema_id: str, version: str, state: State) -> Response:
    """The schema file itself (XSD or JSON Schema)."""
    try:
        info = state.registry.info(schema_id, version)
        source = state.registry.source(schema_id, version)
    except KeyError as exc:
        raise NotFound(f"no schema {schema_id} version {version}") from exc
    return Response(source, media_type=info.media_type)


@router.get("/v1/keys")
async def signing_keys(state: State) -> Response:
    """JWKS: the public keys that verify acceptance receipts: the current one first, then every one it replaced
    (each with ``retired_at``), so a receipt verifies for as long as it is kept."""
    return Response(orjson.dumps(state.signing_keys.jwks()), media_type="application/jwk-set+json")


@router.get("/healthz", include_in_schema=False)
async def healthz() -> Response:
    return Response(b'{"status":"ok"}', media_type="application/json")


async def readiness(state: BusRuntime) -> dict[str, str]:
    """The database's, the payload store's, the disks' and the broker's state: ``ok``, ``down: …`` or
    ``degraded: …``. Intake keeps accepting while the broker is away (messages wait in the outbox), so a broker
    outage degrades the gateway; only a database that does not answer makes it unready. One that answers while
    intake's writes fail (a full disk) degrades it: every gateway shares that database, so taking this one out of
    service would help no one, and its refusals tell senders when to retry. A payload store whose last write
    failed degrades it too (large packets are refused until a write succeeds), and so does a filesystem with less
    room than two bodies of the size cap, before writes start failing. ``/readyz`` and the dashboard both show
    this; neither names a path."""
    checks: dict[str, str] = {}
    try:
        await state.db.ping()
        failure = state.writer.failure
        checks["database"] = "ok" if failure is None else f"degraded: {failure.summary()}"
    except Exception as exc:
        checks["database"] = f"down: {type(exc).__name__}"
    payload_failure = state.intake.payload_failure
    checks["payload_store"] = "ok" if payload_failure is None else f"degraded: {payload_failure.summary()}"
    checks["free_space"] = await asyncio.to_thread(_free_space_check, state.settings)
    try:
        await state.broker.ping()
        checks["broker"] = "ok"
    except Exception as exc:
        checks["broker"] = f"degraded: {exc}"
    return checks


def _free_space_check(settings: Settings) -> str:
    try:
        short = [space for space in free_space(settings) if space.verdict == "fail"]
    except OSError as exc:
        return f"unknown: {type(exc).__name__}"
    return "ok" if not short else "degraded: " + "; ".join(space.describe(with_path=False) for space in short)


@router.get("/readyz")
async def readyz(state: State) -> Response:
    """Ready when the database answers; reports the broker (``degraded`` while it is away) and the backlog."""
    checks = await readiness(state)
    ready = not checks["database"].startswith("down")
    status = "not-ready" if not ready else ("ready" if set(checks.values()) == {"ok"} else "degraded")
    body = {"status": status, "checks": checks, "outbox_backlog": await state.relay.backlog()}
    return Response(orjson.dumps(body), status_code=200 if ready else 503, media_type="application/json")


@router.get("/metrics", include_in_schema=False)
async def metrics() -> Response:
    return Response(exposition(), media_type=CONTENT_TYPE_LATEST)
