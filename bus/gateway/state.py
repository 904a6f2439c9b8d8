"""Everything a gateway process holds for its lifetime, built once in the app lifespan."""

from __future__ import annotations

import os
import socket
import uuid
from dataclasses import dataclass

from docbus.broker import Broker, broker_from_settings
from docbus.intake import IntakeService
from docbus.payload_store import DirectoryPayloadStore, PayloadStore
from docbus.relay import OutboxRelay
from docbus.schemas.registry import SchemaRegistry
from docbus.settings import Settings
from docbus.signing import ReceiptSigner
from docbus.store.agencies import AgencyDirectory
from docbus.store.database import Database
from docbus.store.intake_writer import IntakeWriter
from docbus.store.messages import MessageStore
from docbus.validation import MessageValidator


def instance_name(role: str) -> str:
    """Who owns outbox leases: unique per process, readable in the database."""
    return f"{role}:{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:6]}"


@dataclass
class GatewayState:
    settings: Settings
    db: Database
    registry: SchemaRegistry
    signer: ReceiptSigner
    directory: AgencyDirectory
    messages: MessageStore
    payload_store: PayloadStore
    writer: IntakeWriter
    intake: IntakeService
    broker: Broker
    relay: OutboxRelay

    @classmethod
    def build(cls, settings: Settings, *, sweep: bool = True) -> GatewayState:
        """``sweep``: also take over stale outbox rows (``serve``); a pure ``gateway`` leaves that to workers."""
        db = Database.from_settings(settings)
        registry = SchemaRegistry()
        signer = ReceiptSigner.from_file(settings.resolved_signing_key_file())
        owner = instance_name("gateway")
        writer = IntakeWriter(
            db, max_batch=settings.group_commit_max_batch, lease_owner=owner, lease_seconds=settings.relay_lease_seconds
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
        writer.on_commit(relay.notify)
        validator = MessageValidator(registry)
        return cls(
            settings=settings,
            db=db,
            registry=registry,
            signer=signer,
            directory=AgencyDirectory(db, cache_seconds=settings.credential_cache_seconds),
            messages=MessageStore(db),
            payload_store=payload_store,
            writer=writer,
            intake=IntakeService(
                validator, signer, writer, payload_store, claim_check_bytes=settings.claim_check_bytes
            ),
            broker=broker,
            relay=relay,
        )

    async def start(self) -> None:
        # The broker may be down at start-up: intake still works, the relay catches up when it returns.
        await self.broker.start()
        await self.writer.start()
        await self.relay.start()

    async def aclose(self) -> None:
        await self.writer.aclose()
        await self.relay.aclose()
        await self.broker.aclose()
        await self.db.dispose()
