"""The embedded log's consumer groups as an operator sees them: where each stands, and forgetting a retired one.

Retention keeps every record a group that reads a topic has not committed past (see
:mod:`docbus.broker.embedded_retention`), so a group left behind by a destination taken out of the routes would
hold its topics' records forever. ``docbus log groups`` shows each group's lag and last commit, which makes
such a group easy to spot; ``docbus log forget GROUP`` deletes its offsets, and refuses while a member holds it.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

from sqlalchemy import delete, select

from docbus.broker.embedded_sql import now_ms
from docbus.store.database import Database
from docbus.store.tables import broker_groups, broker_offsets, broker_partitions, broker_records


@dataclass(frozen=True)
class GroupPosition:
    """One group on one partition: what it committed, the partition's end, and the earliest record kept."""

    group: str
    topic: str
    partition: int
    committed: int
    end: int
    earliest: int | None  # None: nothing left in the partition
    committed_at: datetime

    @property
    def lag(self) -> int:
        return max(0, self.end - self.committed)


class GroupInUse(Exception):
    """A member holds the group: forgetting its offsets now would make it read its topics again from the start."""


async def group_positions(db: Database) -> list[GroupPosition]:
    o, p, r = broker_offsets.c, broker_partitions.c, broker_records.c
    async with db.reader.connect() as conn:
        rows = (
            await conn.execute(
                select(o.group_id, o.topic, o.partition_index, o.committed_offset, o.committed_at, p.next_offset)
                .join(broker_partitions, (p.topic == o.topic) & (p.partition_index == o.partition_index))
                .order_by(o.group_id, o.topic, o.partition_index)
            )
        ).all()
        earliest_of: dict[tuple[str, int], int | None] = {}  # groups share partitions: one lookup each
        for _, topic, partition, *_ in rows:
            if (topic, partition) not in earliest_of:
                earliest_of[(topic, partition)] = await conn.scalar(
                    select(r.record_offset)
                    .where(r.topic == topic, r.partition_index == partition)
                    .order_by(r.record_offset)
                    .limit(1)
                )
        positions = []
        for group, topic, partition, committed, committed_at, end in rows:
            earliest = earliest_of[(topic, partition)]
            positions.append(
                GroupPosition(
                    group=str(group),
                    topic=str(topic),
                    partition=int(partition),
                    committed=int(committed),
                    end=int(end),
                    earliest=None if earliest is None else int(earliest),
                    committed_at=committed_at,
                )
            )
    return positions


async def forget_group(db: Database, group: str) -> int:
    """Delete ``group``'s committed offsets and its membership row; returns how many offsets there were."""
    async with db.transaction() as conn:
        holder = (
            await conn.execute(
                select(broker_groups.c.owner, broker_groups.c.lease_expires_ms).where(broker_groups.c.group_id == group)
            )
        ).first()
        if holder is not None and holder.owner is not None and int(holder.lease_expires_ms) > now_ms():
            raise GroupInUse(f"group {group!r} is held by {holder.owner}; stop that consumer first")
        result = await conn.execute(delete(broker_offsets).where(broker_offsets.c.group_id == group))
        await conn.execute(delete(broker_groups).where(broker_groups.c.group_id == group))
    return int(result.rowcount or 0)
