"""destination_health: what each worker last reported about each destination (breaker, in flight, failures)

An operator whose axis went quiet needs to see, from any gateway, that the workers find it down: since when, the
last reason, whether the breaker holds deliveries back, whether receipts can be fetched. The state lives in the
worker processes, possibly on other machines; each writes it here every few seconds.

Revision ID: 0009
Revises: 0008
Create Date: 2026-11-30 00:10:00
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0009"
down_revision: str | None = "0008"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "destination_health",
        sa.Column("destination", sa.String(64), primary_key=True),
        sa.Column("worker", sa.String(128), primary_key=True),
        sa.Column("breaker", sa.String(16), nullable=False),
        sa.Column("in_flight", sa.Integer(), nullable=False),
        sa.Column("failing_attempts", sa.Integer(), nullable=False),
        sa.Column("delivered", sa.BigInteger(), nullable=False),
        sa.Column("failed_attempts", sa.BigInteger(), nullable=False),
        sa.Column("last_success_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("last_failure_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("last_failure", sa.Text(), nullable=True),
        sa.Column("receipts_ok_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("receipts_failure_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("receipts_failure", sa.Text(), nullable=True),
        sa.Column("started_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("reported_at", sa.DateTime(timezone=True), nullable=False),
    )


def downgrade() -> None:
    op.drop_table("destination_health")
