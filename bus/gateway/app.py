"""The gateway application factory: ``create_app(settings)`` builds a FastAPI app with its own state."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from fastapi import FastAPI

from docbus.delivery.node import DeliveryNode
from docbus.gateway import dashboard, routes_agencies, routes_messages, routes_meta, routes_operations
from docbus.gateway.fast_intake import GatewayApp
from docbus.gateway.problems import install_problem_handlers
from docbus.heap import settle_heap
from docbus.runtime import BusRuntime
from docbus.settings import Settings

DESCRIPTION = """
docbus accepts edXML (QCVN 102:2016) documents and status messages and JSON dossiers from agency systems,
validates them against versioned schemas, makes them durable, and answers with a signed receipt.
Authenticate with `Authorization: Bearer <API key>`. Every error is RFC 9457 `application/problem+json`.
"""


def create_app(settings: Settings | None = None, *, sweep: bool = True, settle: bool = False) -> FastAPI:
    """The app of ``docbus serve``; with ``sweep=False`` (``docbus gateway``) stale outbox rows are left to workers.

    ``settle``: this app is the process' whole life (the command line), so its start-up heap is frozen once it
    runs (see ``settle_heap``); an app embedded in another program (tests) leaves the collector alone."""
    settings = settings or Settings()

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        state = BusRuntime.build(settings, sweep=sweep)
        await state.start()
        # `serve` forwards too; a pure `gateway` leaves forwarding to workers.
        delivery = DeliveryNode(state) if sweep else None
        if delivery is not None:
            await delivery.start()
        app.state.gateway = state
        app.state.delivery = delivery
        if settle:
            settle_heap()
        try:
            yield
        finally:
            if delivery is not None:
                await delivery.aclose()
            await state.aclose()

    app = GatewayApp(title="docbus", version="0.1.0", description=DESCRIPTION, lifespan=lifespan)
    install_problem_handlers(app)
    app.include_router(routes_messages.router)
    app.include_router(routes_operations.router)
    app.include_router(routes_agencies.router)
    app.include_router(routes_meta.router)
    app.include_router(dashboard.router)
    return app


def create_serve_app() -> FastAPI:
    """Factory for ``docbus serve``: every role in one process."""
    return create_app(settle=True)


def create_gateway_app() -> FastAPI:
    """Factory for the scale-out ``docbus gateway`` role: HTTP intake and eager publishing, no sweeping."""
    return create_app(sweep=False, settle=True)
