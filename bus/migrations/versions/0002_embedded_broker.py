"""embedded broker: topics, partitions, records, group offsets and group leases

Revision ID: 0002
Revises: 0001
Create Date: 2026-11-27 09:00:00.000000
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op


revision: str = '0002'
down_revision: str | None = '0001'
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table('broker_topics',
    sa.Column('name', sa.String(length=255), nullable=False),
    sa.Column('partitions', sa.Integer(), nullable=False),
    sa.Column('created_at', sa.DateTime(timezone=True), nullable=False),
    sa.PrimaryKeyConstraint('name', name=op.f('pk_broker_topics'))
    )
    op.create_table('broker_partitions',
    sa.Column('topic', sa.String(length=255), nullable=False),
    sa.Column('partition_index', sa.Integer(), nullable=False),
    sa.Column('next_offset', sa.BigInteger(), nullable=False),
    sa.ForeignKeyConstraint(['topic'], ['broker_topics.name'], name=op.f('fk_broker_partitions_topic_broker_topics'), ondelete='CASCADE'),
    sa.PrimaryKeyConstraint('topic', 'partition_index', name=op.f('pk_broker_partitions'))
    )
    op.create_table('broker_records',
    sa.Column('topic', sa.String(length=255), nullable=False),
    sa.Column('partition_index', sa.Integer(), nullable=False),
    sa.Column('record_offset', sa.BigInteger(), nullable=False),
    sa.Column('record_key', sa.LargeBinary(), nullable=True),
    sa.Column('value', sa.LargeBinary(), nullable=False),
    sa.Column('headers', sa.Text(), nullable=True),
    sa.Column('timestamp_ms', sa.BigInteger(), nullable=False),
    sa.PrimaryKeyConstraint('topic', 'partition_index', 'record_offset', name=op.f('pk_broker_records'))
    )
    op.create_table('broker_offsets',
    sa.Column('group_id', sa.String(length=255), nullable=False),
    sa.Column('topic', sa.String(length=255), nullable=False),
    sa.Column('partition_index', sa.Integer(), nullable=False),
    sa.Column('committed_offset', sa.BigInteger(), nullable=False),
    sa.Column('committed_at', sa.DateTime(timezone=True), nullable=False),
    sa.PrimaryKeyConstraint('group_id', 'topic', 'partition_index', name=op.f('pk_broker_offsets'))
    )
    op.create_table('broker_groups',
    sa.Column('group_id', sa.String(length=255), nullable=False),
    sa.Column('owner', sa.String(length=64), nullable=True),
    sa.Column('generation', sa.Integer(), nullable=False),
    sa.Column('lease_expires_ms', sa.BigInteger(), nullable=False),
    sa.PrimaryKeyConstraint('group_id', name=op.f('pk_broker_groups'))
    )


def downgrade() -> None:
    op.drop_table('broker_groups')
    op.drop_table('broker_offsets')
    op.drop_table('broker_records')
    op.drop_table('broker_partitions')
    op.drop_table('broker_topics')
