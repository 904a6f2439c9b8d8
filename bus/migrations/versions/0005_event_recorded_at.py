"""events: recorded_at beside at (when an event happened, and when it was written)

An event's ``at`` is the moment it happened (an axis acknowledged a delivery, the broker acknowledged a publish);
``recorded_at`` is when its row was written, which the status stream settles on. Existing rows were stamped at
write time, so both columns take the old ``at``.

Revision ID: 0005
Revises: 0004
Create Date: 2026-11-27 21:30:00
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0005"
down_revision: str | None = "0004"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.add_column("events", sa.Column("recorded_at", sa.DateTime(timezone=True), nullable=True))
    op.execute("UPDATE events SET recorded_at = at")
    with op.batch_alter_table("events") as batch:
        batch.alter_column("recorded_at", existing_type=sa.DateTime(timezone=True), nullable=False)


def downgrade() -> None:
    with op.batch_alter_table("events") as batch:
        batch.drop_column("recorded_at")
