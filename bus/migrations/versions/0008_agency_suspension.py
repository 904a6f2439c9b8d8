"""agencies: suspended_at, suspended_by and suspended_reason (a credential turned off, the agency and key kept)

An operator who must stop an agency's system at once (a leaked key under investigation, a system flooding the
bus, an agency merged away) suspends it: its key is refused with 403 and the reason until it is resumed, and
nothing else about the agency changes (its messages, routes, and the key it will use again).

Revision ID: 0008
Revises: 0007
Create Date: 2026-11-29 15:05:00
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0008"
down_revision: str | None = "0007"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    with op.batch_alter_table("agencies") as batch:
        batch.add_column(sa.Column("suspended_at", sa.DateTime(timezone=True), nullable=True))
        batch.add_column(sa.Column("suspended_by", sa.String(128), nullable=True))
        batch.add_column(sa.Column("suspended_reason", sa.String(500), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("agencies") as batch:
        batch.drop_column("suspended_reason")
        batch.drop_column("suspended_by")
        batch.drop_column("suspended_at")
