"""Everything a docbus process holds for its lifetime (database, schemas, signer, intake, broker, relay), built once.

The gateway serves HTTP on top of it; the worker runs the delivery node on top of it; `serve` does both.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import socket
import uuid
from dataclasses import dataclass

from docbus.broker import Broker, broker_from_settings
from docbus.envelope import ValidatedMessage
from docbus.gateway.body import BodyBudget, BodyLimits
from docbus.gateway.forwarded_certificates import ClientCertificates
from docbus.intake import IntakeService
from docbus.payload_store import DirectoryPayloadStore, PayloadStore
from docbus.rate_limit import AgencyRateLimiter
from docbus.relay import OutboxRelay
from docbus.routing import RouteTable
from docbus.schemas.registry import SchemaRegistry
from docbus.settings import Settings
from docbus.signing_keys import SigningKeys
from docbus.store.agencies import Agency, AgencyDirectory, Role
from docbus.store.database import Database
from docbus.store.intake_writer import IntakeWriter
from docbus.store.messages import MessageStore
from docbus.topics import Topics
from docbus.validation import MessageValidator, ValidationPolicy
from docbus.validation.xml_signature import TrustAnchors


def instance_name(role: str) -> str:
    """Who owns outbox leases: unique per process, readable in the database."""
    return f"{role}:{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:6]}"


class LocalAgencies:
    """The organ ids registered here as agencies (served by the bus itself), refreshed in the background."""

    def __init__(self, directory: AgencyDirectory, refresh_seconds: float = 5.0) -> None:
        self._directory = directory
        self._refresh = refresh_seconds
        self._ids: frozenset[str] = frozenset()
        self._task: asyncio.Task[None] | None = None

    def current(self) -> frozenset[str]:
        return self._ids

    async def refresh(self) -> None:
        self._ids = await self._directory.organ_ids(Role.AGENCY)

    async def start(self) -> None:
        await self.refresh()
        self._task = asyncio.create_task(self._loop(), name="docbus-local-agencies")

    async def _loop(self) -> None:
        while True:
            await asyncio.sleep(self._refresh)
            with contextlib.suppress(Exception):
                await self.refresh()

    async def aclose(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task


@dataclass
class BusRuntime:
    settings: Settings
    db: Database
    registry: SchemaRegistry
    signing_keys: SigningKeys
    directory: AgencyDirectory
    messages: MessageStore
    payload_store: PayloadStore
    writer: IntakeWriter
    intake: IntakeService
    broker: Broker
    relay: OutboxRelay
    routes: RouteTable
    local_agencies: LocalAgencies
    topics: Topics
    body_limits: BodyLimits
    body_budget: BodyBudget  # request bodies this process holds at once; one per process, like the event loop
    client_certificates: ClientCertificates  # a request's own TLS certificate, or a trusted proxy's header
    rate_limiter: AgencyRateLimiter | None = None

    def check_rate(self, caller: Agency) -> None:
        """429 when ``caller`` submits faster than its per-agency rate (no limit when none is configured)."""
        if self.rate_limiter is not None:
            self.rate_limiter.take(caller.organ_id)

    @classmethod
    def build(cls, settings: Settings, *, sweep: bool = True) -> BusRuntime:
        """``sweep``: also take over stale outbox rows (``serve``); a pure ``gateway`` leaves that to workers."""
        db = Database.from_settings(settings)
        registry = SchemaRegistry()
        signing_keys = SigningKeys(settings.resolved_signing_key_file())
        owner = instance_name("gateway")
        writer = IntakeWriter(
            db,
            max_batch=settings.group_commit_max_batch,
            max_wait=settings.group_commit_max_wait_ms / 1000,
            lease_owner=owner if settings.relay_enabled else None,
            lease_seconds=settings.relay_lease_seconds,
        )
        payload_store = DirectoryPayloadStore(settings.resolved_payload_dir())
        broker = broker_from_settings(settings, db)
        relay = OutboxRelay(
            db,
            broker,
            owner=owner,
            lease_seconds=settings.relay_lease_seconds,
            sweep_interval=settings.relay_sweep_interval_seconds,
            batch_size=settings.relay_batch_size,
            sweep=sweep,
        )
        if settings.relay_enabled:
            writer.on_commit(relay.notify)
        validator = MessageValidator(registry, policy=validation_policy(settings))
        directory = AgencyDirectory(db, cache_seconds=settings.credential_cache_seconds)
        message_store = MessageStore(db)
        routes = RouteTable.load(settings.routes_file)
        topics = Topics(settings.topic_prefix)
        local_agencies = LocalAgencies(directory)

        async def sent_through_us(message: ValidatedMessage) -> bool:
            addressee = message.receivers[0] if message.receivers else None
            return await message_store.was_sent_to(message.response_for, addressee, message.sender)

        return cls(
            settings=settings,
            db=db,
            registry=registry,
            signing_keys=signing_keys,
            directory=directory,
            messages=message_store,
            payload_store=payload_store,
            writer=writer,
            intake=IntakeService(
                validator,
                signing_keys,
                writer,
                payload_store,
                claim_check_bytes=settings.claim_check_bytes,
                routes=routes,
                local_agencies=local_agencies.current,
                originals=sent_through_us,
                topics=topics,
            ),
            broker=broker,
            relay=relay,
            routes=routes,
            local_agencies=local_agencies,
            topics=topics,
            rate_limiter=(
                None
                if settings.intake_rate_per_agency is None
                else AgencyRateLimiter(settings.intake_rate_per_agency, settings.intake_burst_per_agency)
            ),
            body_limits=BodyLimits(
                settings.max_body_bytes, settings.body_idle_timeout_seconds, settings.body_read_timeout_seconds
            ),
            body_budget=BodyBudget(settings.inflight_body_bytes),
            client_certificates=settings.client_certificates(),
        )

    async def start(self) -> None:
        await self.local_agencies.start()
        # The broker may be down at start-up: intake still works, the relay catches up when it returns.
        await self.broker.start()
        await self.writer.start()
        if self.settings.relay_enabled:
            await self.relay.start()

    async def aclose(self) -> None:
        await self.writer.aclose()
        await self.relay.aclose()
        await self.broker.aclose()
        await self.local_agencies.aclose()
        await self.db.dispose()


def validation_policy(settings: Settings) -> ValidationPolicy:
    """Intake's semantic rules as configured: the receivers cap and the XML-DSig policy with its anchors."""
    anchors = None
    if settings.xml_signature_trust_file is not None:
        anchors = TrustAnchors.from_pem_file(settings.xml_signature_trust_file)
    return ValidationPolicy(
        max_receivers=settings.max_receivers, signatures=settings.xml_signature_policy, trust_anchors=anchors
    )
