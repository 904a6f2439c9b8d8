"""The relational schema of the bus (SQLAlchemy Core tables; Alembic migrations create them).

- ``agencies``: the agency directory (đơn vị), with hashed API keys.
- ``messages``: one row per accepted message; the signed receipt is kept byte for byte so a replay returns it.
- ``payloads``: the payload bytes, apart so that listings never drag them along.
- ``events``: every state change of a message, hash-chained per message (the audit log).
- ``outbox``: what still has to be published to the broker; written in the same transaction as the message.
"""

from __future__ import annotations

from sqlalchemy import (
    BigInteger,
    Column,
    DateTime,
    ForeignKey,
    Index,
    Integer,
    LargeBinary,
    MetaData,
    String,
    Table,
    Text,
    UniqueConstraint,
)

metadata = MetaData(
    naming_convention={
        "ix": "ix_%(column_0_label)s",
        "uq": "uq_%(table_name)s_%(column_0_name)s",
        "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
        "pk": "pk_%(table_name)s",
    }
)

# SQLite only auto-increments INTEGER PRIMARY KEY; PostgreSQL wants BIGINT for long-lived logs.
AutoId = BigInteger().with_variant(Integer(), "sqlite")

agencies = Table(
    "agencies",
    metadata,
    Column("organ_id", String(64), primary_key=True),
    Column("name", String(300), nullable=False),
    Column("parent", String(64), nullable=True),
    Column("level", Integer, nullable=False),
    Column("role", String(16), nullable=False),
    Column("key_hash", String(64), nullable=False, unique=True),
    Column("key_prefix", String(16), nullable=False),
    Column("created_at", DateTime(timezone=True), nullable=False),
    Column("key_rotated_at", DateTime(timezone=True), nullable=False),
    # Key rotation with an overlap: the old key keeps working until previous_key_expires_at.
    Column("previous_key_hash", String(64), nullable=True),
    Column("previous_key_expires_at", DateTime(timezone=True), nullable=True),
    # A suspended agency's key is refused (403, with the reason) until it is resumed.
    Column("suspended_at", DateTime(timezone=True), nullable=True),
    Column("suspended_by", String(128), nullable=True),
    Column("suspended_reason", String(500), nullable=True),
    # Mutual TLS: the key is accepted only over a connection showing this certificate (SHA-256 of its DER).
    Column("client_cert_sha256", String(64), nullable=True),
    # A certificate change-over: the certificate bound before keeps working until previous_client_cert_expires_at.
    Column("previous_client_cert_sha256", String(64), nullable=True),
    Column("previous_client_cert_expires_at", DateTime(timezone=True), nullable=True),
)
Index("ix_agencies_previous_key_hash", agencies.c.previous_key_hash)

# What was done to each agency's entry, by whom and when (registered, key rotated, suspended, certificate bound...),
# hash-chained per agency like a message's events (docbus.store.agency_history).
agency_events = Table(
    "agency_events",
    metadata,
    Column("id", AutoId, primary_key=True, autoincrement=True),
    Column("organ_id", String(64), nullable=False),
    Column("seq", Integer, nullable=False),
    Column("action", String(32), nullable=False),
    Column("at", DateTime(timezone=True), nullable=False),
    Column("actor", String(128), nullable=False),
    Column("detail", Text, nullable=False),  # JSON object
    Column("prev_hash", String(64), nullable=False),
    Column("hash", String(64), nullable=False),
    UniqueConstraint("organ_id", "seq", name="uq_agency_events_organ_seq"),
)

messages = Table(
    "messages",
    metadata,
    Column("id", String(26), primary_key=True),
    Column("kind", String(24), nullable=False),
    Column("schema_id", String(64), nullable=False),
    Column("schema_version", String(16), nullable=False),
    Column("sender", String(64), nullable=False),
    Column("receivers", Text, nullable=False),  # JSON array of organ ids
    Column("business_id", String(512), nullable=False),
    Column("sha256", String(64), nullable=False),
    Column("size", BigInteger, nullable=False),
    Column("content_type", String(100), nullable=False),
    Column("received_at", DateTime(timezone=True), nullable=False),
    Column("idempotency_key", String(255), nullable=True),
    # The identity of a submission: "key:<Idempotency-Key>" or "content:<sha256 of business id + payload hash>".
    Column("dedup_key", String(300), nullable=False),
    Column("trace_id", String(32), nullable=False),
    Column("status", String(24), nullable=False),
    Column("response_for", String(512), nullable=True),
    Column("status_code", String(2), nullable=True),
    Column("receipt", LargeBinary, nullable=False),
    Column("payload_ref", String(512), nullable=True),  # cleared when retention deletes the payload
    Column("payload_purged_at", DateTime(timezone=True), nullable=True),  # when retention deleted the payload
    UniqueConstraint("sender", "dedup_key", name="uq_messages_sender_dedup"),
)
Index("ix_messages_sender_id", messages.c.sender, messages.c.id)
Index("ix_messages_business_id", messages.c.business_id)
Index("ix_messages_response_for", messages.c.response_for)
# Payload retention reads the claim-checked messages in id order (retention clears payload_ref).
Index(
    "ix_messages_claim_checked",
    messages.c.id,
    sqlite_where=messages.c.payload_ref.is_not(None),
    postgresql_where=messages.c.payload_ref.is_not(None),
)

payloads = Table(
    "payloads",
    metadata,
    Column("message_id", String(26), ForeignKey("messages.id", ondelete="CASCADE"), primary_key=True),
    Column("body", LargeBinary, nullable=False),
)

events = Table(
    "events",
    metadata,
    Column("id", AutoId, primary_key=True, autoincrement=True),
    Column("message_id", String(26), ForeignKey("messages.id", ondelete="CASCADE"), nullable=False),
    Column("seq", Integer, nullable=False),
    Column("type", String(24), nullable=False),
    Column("at", DateTime(timezone=True), nullable=False),  # when it happened
    Column("recorded_at", DateTime(timezone=True), nullable=False),  # when this row was written
    Column("actor", String(64), nullable=False),
    Column("destination", String(64), nullable=True),
    Column("detail", Text, nullable=False),  # JSON object
    Column("prev_hash", String(64), nullable=False),
    Column("hash", String(64), nullable=False),
    UniqueConstraint("message_id", "seq", name="uq_events_message_seq"),
)

outbox = Table(
    "outbox",
    metadata,
    Column("id", AutoId, primary_key=True, autoincrement=True),
    Column("message_id", String(26), ForeignKey("messages.id", ondelete="CASCADE"), nullable=False),
    Column("topic", String(255), nullable=False),
    Column("record_key", String(512), nullable=False),
    Column("created_at", DateTime(timezone=True), nullable=False),
    Column("published_at", DateTime(timezone=True), nullable=True),
    Column("attempts", Integer, nullable=False, server_default="0"),
    # A relay owns a row until claimed_until: the gateway that committed it publishes at once; a sweeper takes
    # over only rows whose lease ran out (the owner crashed, or the broker was down).
    Column("claimed_by", String(64), nullable=True),
    Column("claimed_until", DateTime(timezone=True), nullable=True),
)
Index("ix_outbox_unpublished", outbox.c.published_at, outbox.c.id)

# The embedded broker (docbus.broker.embedded): a durable log in this database, used when no Kafka is configured.
# - ``broker_topics``: every topic and its partition count.
# - ``broker_partitions``: the next offset of each partition; publishers lock this row, so offsets are dense and
#   become visible in order.
# - ``broker_records``: the log itself; the primary key is the index consumers read ranges from.
# - ``broker_offsets``: what each consumer group has committed, per partition.
# - ``broker_groups``: the one active member of each consumer group (a lease with an expiry and a generation).

broker_topics = Table(
    "broker_topics",
    metadata,
    Column("name", String(255), primary_key=True),
    Column("partitions", Integer, nullable=False),
    Column("created_at", DateTime(timezone=True), nullable=False),
)

broker_partitions = Table(
    "broker_partitions",
    metadata,
    Column("topic", String(255), ForeignKey("broker_topics.name", ondelete="CASCADE"), primary_key=True),
    Column("partition_index", Integer, primary_key=True),
    Column("next_offset", BigInteger, nullable=False),
)

broker_records = Table(
    "broker_records",
    metadata,
    Column("topic", String(255), primary_key=True),
    Column("partition_index", Integer, primary_key=True),
    Column("record_offset", BigInteger, primary_key=True),
    Column("record_key", LargeBinary, nullable=True),
    Column("value", LargeBinary, nullable=False),
    Column("headers", Text, nullable=True),  # JSON array of [name, base64 value]; NULL when there are none
    Column("timestamp_ms", BigInteger, nullable=False),
)

broker_offsets = Table(
    "broker_offsets",
    metadata,
    Column("group_id", String(255), primary_key=True),
    Column("topic", String(255), primary_key=True),
    Column("partition_index", Integer, primary_key=True),
    Column("committed_offset", BigInteger, nullable=False),
    Column("committed_at", DateTime(timezone=True), nullable=False),
)

broker_groups = Table(
    "broker_groups",
    metadata,
    Column("group_id", String(255), primary_key=True),
    Column("owner", String(64), nullable=True),
    Column("generation", Integer, nullable=False),
    Column("lease_expires_ms", BigInteger, nullable=False),
)

# Messages a destination gave up on: kept with every attempt so an operator can see why, and resend.
dead_letters = Table(
    "dead_letters",
    metadata,
    Column("id", AutoId, primary_key=True, autoincrement=True),
    Column("message_id", String(26), ForeignKey("messages.id", ondelete="CASCADE"), nullable=False),
    Column("destination", String(64), nullable=False),
    Column("receivers", Text, nullable=False),  # JSON array: the receivers this destination serves
    Column("reason", Text, nullable=False),
    Column("attempts", Text, nullable=False),  # JSON array of {at, attempt, error...}
    Column("created_at", DateTime(timezone=True), nullable=False),
    Column("resent_at", DateTime(timezone=True), nullable=True),
    Column("resent_by", String(64), nullable=True),
)
Index("ix_dead_letters_destination", dead_letters.c.destination, dead_letters.c.id)
Index("ix_dead_letters_message", dead_letters.c.message_id)

# Where each outgoing event stream stands (the last event id it published) and which process publishes it now.
stream_cursors = Table(
    "stream_cursors",
    metadata,
    Column("name", String(64), primary_key=True),
    Column("position", BigInteger, nullable=False),
    Column("owner", String(128), nullable=True),
    Column("lease_until", DateTime(timezone=True), nullable=True),
)

# What each worker process last reported about each destination it forwards to (one row per pair, rewritten every
# few seconds, removed when the worker stops): its circuit breaker, deliveries in flight, its latest successes
# and failures, and those of fetching the destination's receipts. Read by GET /v1/destinations.
destination_health = Table(
    "destination_health",
    metadata,
    Column("destination", String(64), primary_key=True),
    Column("worker", String(128), primary_key=True),
    Column("breaker", String(16), nullable=False),
    Column("in_flight", Integer, nullable=False),
    Column("failing_attempts", Integer, nullable=False),  # failed attempts since the last success
    Column("delivered", BigInteger, nullable=False),  # since the worker started
    Column("failed_attempts", BigInteger, nullable=False),  # since the worker started
    Column("last_success_at", DateTime(timezone=True), nullable=True),
    Column("last_failure_at", DateTime(timezone=True), nullable=True),
    Column("last_failure", Text, nullable=True),
    Column("receipts_ok_at", DateTime(timezone=True), nullable=True),
    Column("receipts_failure_at", DateTime(timezone=True), nullable=True),
    Column("receipts_failure", Text, nullable=True),
    Column("started_at", DateTime(timezone=True), nullable=False),
    Column("reported_at", DateTime(timezone=True), nullable=False),
)
