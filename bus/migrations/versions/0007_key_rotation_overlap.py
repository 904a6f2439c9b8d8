"""agencies: the previous API key and when it stops working (key rotation with an overlap)

An agency system cannot switch to a new key at the very moment an operator issues it: ``rotate-key
--keep-old-for`` keeps the old key working for a while. Its hash moves to ``previous_key_hash`` (indexed: a
presented key is looked up by either hash) with ``previous_key_expires_at``.

Revision ID: 0007
Revises: 0006
Create Date: 2026-11-29 15:00:00
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0007"
down_revision: str | None = "0006"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    with op.batch_alter_table("agencies") as batch:
        batch.add_column(sa.Column("previous_key_hash", sa.String(64), nullable=True))
        batch.add_column(sa.Column("previous_key_expires_at", sa.DateTime(timezone=True), nullable=True))
    op.create_index("ix_agencies_previous_key_hash", "agencies", ["previous_key_hash"])


def downgrade() -> None:
    op.drop_index("ix_agencies_previous_key_hash", table_name="agencies")
    with op.batch_alter_table("agencies") as batch:
        batch.drop_column("previous_key_expires_at")
        batch.drop_column("previous_key_hash")
