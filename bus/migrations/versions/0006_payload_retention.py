"""messages: payload_purged_at, and a partial index of the claim-checked messages (payload retention)

Payload retention deletes the bytes of settled messages after a while and keeps the rest: the message row records
when (``payload_purged_at``), and a claim-checked message's ``payload_ref`` is cleared then, so the partial index
over the ids of messages with a ``payload_ref`` holds only the claim-checked payloads that still exist (what
retention reads through, in id order, without walking over every other message).

Revision ID: 0006
Revises: 0005
Create Date: 2026-11-29 12:30:00
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0006"
down_revision: str | None = "0005"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.add_column("messages", sa.Column("payload_purged_at", sa.DateTime(timezone=True), nullable=True))
    claim_checked = sa.text("payload_ref IS NOT NULL")
    op.create_index(
        "ix_messages_claim_checked", "messages", ["id"], sqlite_where=claim_checked, postgresql_where=claim_checked
    )


def downgrade() -> None:
    op.drop_index("ix_messages_claim_checked", table_name="messages")
    with op.batch_alter_table("messages") as batch:
        batch.drop_column("payload_purged_at")
