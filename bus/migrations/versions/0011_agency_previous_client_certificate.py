"""agencies: previous_client_cert_sha256 and its expiry (a certificate change-over without a gap)

An agency's system renews its client certificate every year or two, and cannot switch at the very moment an
operator binds the new one. Like a key rotation, binding a new certificate may keep the one bound so far accepted
for a while (``docbus agency bind-certificate ORGAN_ID NEW.pem --keep-old-for 7d``).

Revision ID: 0011
Revises: 0010
Create Date: 2026-11-30 06:20:00
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0011"
down_revision: str | None = "0010"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    with op.batch_alter_table("agencies") as batch:
        batch.add_column(sa.Column("previous_client_cert_sha256", sa.String(64), nullable=True))
        batch.add_column(sa.Column("previous_client_cert_expires_at", sa.DateTime(timezone=True), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("agencies") as batch:
        batch.drop_column("previous_client_cert_expires_at")
        batch.drop_column("previous_client_cert_sha256")
