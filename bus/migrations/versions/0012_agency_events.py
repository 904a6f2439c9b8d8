"""agency_events: what was done to each agency's entry, by whom and when, hash-chained per agency

Registering an agency, rotating its key, suspending and resuming it, binding its key to a certificate: each
decides who may submit as a public body, so each is kept with its time and actor, and an edited or deleted entry
breaks the chain (``docbus audit verify``). Agencies registered before this revision start their chain with their
next change.

Revision ID: 0012
Revises: 0011
Create Date: 2026-11-30 07:15:00
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0012"
down_revision: str | None = "0011"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

AutoId = sa.BigInteger().with_variant(sa.Integer(), "sqlite")


def upgrade() -> None:
    op.create_table(
        "agency_events",
        sa.Column("id", AutoId, primary_key=True, autoincrement=True),
        sa.Column("organ_id", sa.String(64), nullable=False),
        sa.Column("seq", sa.Integer, nullable=False),
        sa.Column("action", sa.String(32), nullable=False),
        sa.Column("at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("actor", sa.String(128), nullable=False),
        sa.Column("detail", sa.Text, nullable=False),
        sa.Column("prev_hash", sa.String(64), nullable=False),
        sa.Column("hash", sa.String(64), nullable=False),
        sa.UniqueConstraint("organ_id", "seq", name="uq_agency_events_organ_seq"),
    )


def downgrade() -> None:
    op.drop_table("agency_events")
