"""Everything a gateway process holds for its lifetime, built once in the app lifespan."""

from __future__ import annotations

from dataclasses import dataclass

from docbus.intake import IntakeService
from docbus.schemas.registry import SchemaRegistry
from docbus.settings import Settings
from docbus.signing import ReceiptSigner
from docbus.store.agencies import AgencyDirectory
from docbus.store.database import Database
from docbus.store.intake_writer import IntakeWriter
from docbus.store.messages import MessageStore
from docbus.validation import MessageValidator


@dataclass
class GatewayState:
    settings: Settings
    db: Database
    registry: SchemaRegistry
    signer: ReceiptSigner
    directory: AgencyDirectory
    messages: MessageStore
    writer: IntakeWriter
    intake: IntakeService

    @classmethod
    def build(cls, settings: Settings) -> GatewayState:
        db = Database.from_settings(settings)
        registry = SchemaRegistry()
        signer = ReceiptSigner.from_file(settings.resolved_signing_key_file())
        writer = IntakeWriter(db, max_batch=settings.group_commit_max_batch)
        validator = MessageValidator(registry)
        return cls(
            settings=settings,
            db=db,
            registry=registry,
            signer=signer,
            directory=AgencyDirectory(db, cache_seconds=settings.credential_cache_seconds),
            messages=MessageStore(db),
            writer=writer,
            intake=IntakeService(validator, signer, writer),
        )

    async def start(self) -> None:
        await self.writer.start()

    async def aclose(self) -> None:
        await self.writer.aclose()
        await self.db.dispose()
