"""agencies: client_cert_sha256 (a key bound to the TLS client certificate of the system that holds it)

A leaked API key is enough to submit as an agency. Where the gateway serves mutual TLS, an operator can bind an
agency's key to the certificate its system shows (``docbus agency bind-certificate``): the key is then refused
over any connection that shows another certificate, or none.

Revision ID: 0010
Revises: 0009
Create Date: 2026-11-30 04:00:00
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0010"
down_revision: str | None = "0009"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    with op.batch_alter_table("agencies") as batch:
        batch.add_column(sa.Column("client_cert_sha256", sa.String(64), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("agencies") as batch:
        batch.drop_column("client_cert_sha256")
