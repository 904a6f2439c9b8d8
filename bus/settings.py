"""The one place docbus reads its environment.

``Settings`` is built once at start-up (``Settings()`` reads ``DOCBUS_*`` variables), validated, and passed down
to ``create_app(settings)``, the worker and the CLI. Nothing else in the package reads ``os.environ``.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

from pydantic import Field, SecretStr, field_validator, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

from docbus.gateway_tls import GatewayTls
from docbus.kafka_security import DEFAULT_MECHANISM, KafkaSecurity, Mechanism, Protocol
from docbus.store.database_tls import DatabaseTls
from docbus.validation.xml_signature import SignaturePolicy

if TYPE_CHECKING:
    from docbus.gateway.forwarded_certificates import ClientCertificates


class Settings(BaseSettings):
    """Runtime configuration; every field maps to ``DOCBUS_<NAME>``."""

    # Errors never echo the input: it holds passwords and secrets. A variable set to nothing counts as unset
    # (``DOCBUS_KAFKA_SSL_CA_FILE=`` in an env file must not mean the current folder).
    model_config = SettingsConfigDict(
        env_prefix="DOCBUS_",
        env_nested_delimiter="__",
        extra="ignore",
        hide_input_in_errors=True,
        env_ignore_empty=True,
    )

    data_dir: Path = Field(default=Path("./docbus-data"), description="Embedded database, keys, payloads.")
    tls_cert_file: Path | None = Field(
        default=None, description="The gateway serves HTTPS with this certificate chain (PEM); unset = plain HTTP."
    )
    tls_key_file: Path | None = Field(default=None, description="The private key of tls_cert_file (PEM).")
    tls_key_password: SecretStr | None = Field(default=None, description="The private key's password.")
    tls_client_ca_file: Path | None = Field(
        default=None,
        description="Mutual TLS: HTTPS clients must show a certificate these CAs (PEM) signed; unset = any client "
        "(API keys authenticate agencies either way).",
    )
    tls_reload_check_seconds: float = Field(
        default=60.0,
        ge=0,
        description="How often (at most) a running gateway looks whether its certificate files were replaced, and "
        "takes them if they can serve; 0 = only at start.",
    )
    trusted_proxies: str = Field(
        default="",
        description="Addresses or networks (CIDR, comma-separated) of TLS-terminating proxies in front of the "
        "gateway whose forwarded client certificates (proxy_client_cert_header) docbus believes; empty = none.",
    )
    proxy_client_cert_header: str = Field(
        default="X-Client-Cert",
        pattern=r"^[A-Za-z0-9-]+$",
        description="The header in which a trusted proxy forwards the client's certificate (PEM, base64 DER, "
        "Envoy's X-Forwarded-Client-Cert or a SHA-256 fingerprint).",
    )
    database_url: str | None = Field(
        default=None, description="SQLAlchemy async URL; unset = SQLite (WAL) file under data_dir."
    )
    database_ssl_ca_file: Path | None = Field(
        default=None,
        description="PostgreSQL over TLS: the server's certificate must chain to these CAs (PEM) and name its host; "
        "unset = as the URL says (asyncpg alone encrypts when it can and checks nothing).",
    )
    database_ssl_cert_file: Path | None = Field(
        default=None, description="PostgreSQL over TLS: a client certificate (PEM) for a server that asks for one."
    )
    database_ssl_key_file: Path | None = Field(default=None, description="The key of database_ssl_cert_file (PEM).")
    database_ssl_key_password: SecretStr | None = Field(default=None, description="That key's password.")
    kafka_bootstrap: str | None = Field(default=None, description="Kafka bootstrap servers; unset = embedded.")
    kafka_security_protocol: Protocol = Field(
        default="PLAINTEXT", description="How clients connect to Kafka: PLAINTEXT, SSL, SASL_PLAINTEXT or SASL_SSL."
    )
    kafka_sasl_mechanism: Mechanism = Field(default=DEFAULT_MECHANISM, description="SCRAM-SHA-512, -256 or PLAIN.")
    kafka_sasl_username: str | None = Field(default=None, description="SASL user (with a SASL_* protocol).")
    kafka_sasl_password: SecretStr | None = Field(default=None, description="SASL password.")
    kafka_ssl_ca_file: Path | None = Field(
        default=None, description="CA certificates (PEM) the brokers' certificates must chain to; unset = system CAs."
    )
    kafka_ssl_cert_file: Path | None = Field(
        default=None, description="Client certificate (PEM), for brokers that ask for one (mutual TLS)."
    )
    kafka_ssl_key_file: Path | None = Field(default=None, description="Its private key, if not in the cert file.")
    kafka_ssl_key_password: SecretStr | None = Field(default=None, description="The private key's password.")
    signing_key_file: Path | None = Field(
        default=None, description="Ed25519 private key (PEM); unset = data_dir/keys/receipt-signing.pem."
    )

    max_body_bytes: int = Field(default=64 * 1024 * 1024, gt=0, description="Request body cap, enforced while reading.")
    inflight_body_bytes: int = Field(
        default=256 * 1024 * 1024,
        gt=0,
        description="Bytes of request bodies one gateway process may hold at once (charged as they arrive); a body "
        "that would pass it is refused with 503 busy and Retry-After. At least max_body_bytes.",
    )
    body_idle_timeout_seconds: float = Field(
        default=30.0, gt=0, description="A body that stops arriving for this long is refused with 408."
    )
    body_read_timeout_seconds: float = Field(
        default=600.0, gt=0, description="A body still arriving this long after it started is refused with 408."
    )
    group_commit_max_batch: int = Field(default=256, gt=0, description="Most submissions in one transaction.")
    group_commit_max_wait_ms: float = Field(
        default=2.0,
        ge=0,
        description="While traffic flows, how long a submission that finds the intake writer free waits for others "
        "to share its transaction (less once the batch is full); 0 = never wait.",
    )
    max_receivers: int = Field(
        default=1_000, ge=1, description="The most receivers one message may name (a message fans out to each)."
    )
    xml_signature_policy: SignaturePolicy = Field(
        default=SignaturePolicy.RECORD,
        description="An edXML packet's XML-DSig signature: record (verify, keep the outcome, refuse nothing), "
        "reject-invalid (a signature present must verify), require (every packet must carry one that verifies).",
    )
    xml_signature_trust_file: Path | None = Field(
        default=None,
        description="PEM bundle of the certificate authorities signers must chain to; unset = trust is not judged.",
    )
    intake_rate_per_agency: float | None = Field(
        default=None,
        gt=0,
        description="Messages a second one credential may submit (intake and validate) per gateway process, on "
        "average; past it 429 rate-limited with Retry-After. Unset = no limit.",
    )
    intake_burst_per_agency: int | None = Field(
        default=None,
        ge=1,
        description="How many submissions a credential may send at once above its rate; unset = one second's worth.",
    )
    event_streams_per_caller: int = Field(
        default=8,
        ge=1,
        description="Open GET /v1/events streams a credential may hold per gateway process (each polls the database).",
    )
    credential_cache_seconds: float = Field(
        default=5.0,
        ge=0,
        description="How long a resolved API key is trusted before the directory is asked again.",
    )
    db_pool_size: int = Field(default=10, gt=0)

    kafka_partitions: int = Field(default=3, gt=0, description="Partitions of each topic docbus creates.")
    kafka_replication_factor: int | None = Field(
        default=None, gt=0, description="Replication of each topic docbus creates; unset = min(3, brokers)."
    )
    kafka_retention_hours: float | None = Field(
        default=None,
        gt=0,
        description="retention.ms of docbus' topics in Kafka (agency, status, dead-letter, resend): set on those it "
        "creates, and on those that exist by workers at start and `docbus topics sync`; unset = the broker's default.",
    )
    kafka_client_id: str = Field(default="docbus")
    kafka_compression: str | None = Field(default=None, description="Producer compression; unset = zstd.")
    kafka_topic_refresh_seconds: float = Field(
        default=2.0, gt=0, description="How soon consumers with a pattern see topics created later."
    )
    broker_publish_timeout_seconds: float = Field(
        default=5.0, gt=0, description="How long a publish may wait for the broker before it counts as down."
    )
    broker_max_poll_interval_seconds: float = Field(
        default=300.0, gt=0, description="A consumer that does not poll for this long leaves its group."
    )
    embedded_broker_partitions: int = Field(default=1, gt=0)
    embedded_group_lease_seconds: float = Field(
        default=10.0, gt=0, description="Embedded broker: how soon a standby consumer takes over a dead one."
    )
    embedded_log_retention_hours: float = Field(
        default=168.0,
        ge=0,
        description="Embedded broker: records older than this that every consumer group reading their topic has "
        "committed past are deleted (7 days, as Kafka's default); 0 = keep the log forever.",
    )
    embedded_log_retention_check_seconds: float = Field(
        default=300.0, gt=0, description="Embedded broker: how often workers look for records to delete."
    )
    payload_retention_days: float | None = Field(
        default=None,
        gt=0,
        description="Delete a message's payload this many days after it arrived, once it is settled (published, "
        "delivered or refused at every destination, no dead letter waiting); its record, receipt and timeline "
        "stay. Unset = keep every payload.",
    )
    payload_retention_check_seconds: float = Field(
        default=300.0, gt=0, description="How often workers look for payloads to delete."
    )
    payload_orphan_grace_hours: float = Field(
        default=24.0,
        ge=0,
        description="Workers remove payload-store files that no message refers to (left by a crash between a "
        "payload's write and its commit) once they are this old; 0 = never (`docbus payloads orphans` still "
        "lists and removes them).",
    )
    payload_orphan_check_seconds: float = Field(
        default=3600.0, gt=0, description="How often workers look for payload files no message refers to."
    )
    relay_lease_seconds: float = Field(
        default=15.0, gt=0, description="How long a relay owns an outbox row before a sweeper may take it over."
    )
    relay_enabled: bool = Field(
        default=True,
        description="Publish from this process; off = a gateway that leaves all publishing to workers.",
    )
    forwarding_enabled: bool = Field(
        default=True,
        description="Forward to the routes' destinations and handle receipts in this worker (or serve); off = a "
        "worker that only publishes (with DOCBUS_RELAY_ENABLED=false on another, each role has its own event loop).",
    )
    status_stream: bool | None = Field(
        default=None,
        description="Publish every lifecycle event to <prefix>.status; unset = on with Kafka, off when embedded "
        "(there the events table is the stream: /v1/events).",
    )
    relay_sweep_interval_seconds: float = Field(
        default=0.05,
        gt=0,
        description="How often an idle relay looks for rows to publish (a cheap read); it bounds how soon a "
        "worker publishes what gateways with the relay disabled accepted.",
    )
    relay_batch_size: int = Field(default=500, gt=0)
    claim_check_bytes: int = Field(
        default=512 * 1024, gt=0, description="Payloads above this go to the payload store, not into Kafka."
    )
    topic_prefix: str = Field(
        default="docbus", pattern=r"^[A-Za-z0-9_-]+$", description="Prefix of every topic and consumer group."
    )
    routes_file: Path | None = Field(
        default=None, description="TOML routing rules; unset = accept and publish only, forward nothing."
    )
    adapters: dict[str, dict[str, Any]] = Field(
        default_factory=dict, description="Per-destination adapter settings: DOCBUS_ADAPTERS__<NAME>__<KEY>."
    )
    receipt_poll_seconds: float = Field(default=2.0, gt=0, description="How often adapters fetch receipts.")
    health_report_seconds: float = Field(
        default=5.0,
        gt=0,
        description="How often each worker writes how its destinations fare (GET /v1/destinations); a report "
        "older than three times this is shown as stale.",
    )
    payload_dir: Path | None = Field(default=None, description="Payload store directory; unset = data_dir/payloads.")

    @model_validator(mode="after")
    def _lease_outlives_a_publish(self) -> Settings:
        # The eager relay publishes a row only in the first half of its lease, and a publish may take up to the
        # publish timeout: the lease must cover both, or a sweeper could publish the same row again.
        if self.relay_lease_seconds < 2 * self.broker_publish_timeout_seconds:
            raise ValueError("relay_lease_seconds must be at least twice broker_publish_timeout_seconds")
        return self

    @model_validator(mode="after")
    def _budget_holds_a_largest_body(self) -> Settings:
        # Otherwise a body under the size cap could never be accepted, whatever the load.
        if self.inflight_body_bytes < self.max_body_bytes:
            raise ValueError("inflight_body_bytes must be at least max_body_bytes")
        return self

    @model_validator(mode="after")
    def _database_tls_is_for_postgresql(self) -> Settings:
        given = [
            name
            for name in ("database_ssl_ca_file", "database_ssl_cert_file", "database_ssl_key_file")
            if getattr(self, name) is not None
        ]
        if given and not (self.database_url or "").startswith("postgresql"):
            raise ValueError(f"{', '.join(given)}: for a PostgreSQL database_url (SQLite is a local file)")
        if (self.database_ssl_cert_file is None) != (self.database_ssl_key_file is None):
            raise ValueError("database_ssl_cert_file and database_ssl_key_file go together")
        return self

    @model_validator(mode="after")
    def _tls_is_whole(self) -> Settings:
        if (self.tls_cert_file is None) != (self.tls_key_file is None):
            raise ValueError("tls_cert_file and tls_key_file go together: set both for HTTPS, or neither")
        if self.tls_client_ca_file is not None and self.tls_cert_file is None:
            raise ValueError("tls_client_ca_file is for HTTPS: set tls_cert_file and tls_key_file too")
        return self

    def database_tls(self) -> DatabaseTls | None:
        """How docbus connects to PostgreSQL over TLS, or ``None`` to let the URL decide."""
        if self.database_ssl_ca_file is None and self.database_ssl_cert_file is None:
            return None
        password = self.database_ssl_key_password
        return DatabaseTls(
            self.database_ssl_ca_file,
            self.database_ssl_cert_file,
            self.database_ssl_key_file,
            password.get_secret_value() if password else None,
        )

    def gateway_tls(self) -> GatewayTls | None:
        """The gateway's HTTPS certificate and key, or ``None`` for plain HTTP."""
        if self.tls_cert_file is None or self.tls_key_file is None:
            return None
        password = self.tls_key_password
        return GatewayTls(
            self.tls_cert_file,
            self.tls_key_file,
            password.get_secret_value() if password else None,
            client_ca_file=self.tls_client_ca_file,
        )

    @field_validator("trusted_proxies")
    @classmethod
    def _proxies_are_addresses(cls, value: str) -> str:
        from docbus.gateway.forwarded_certificates import parse_networks

        parse_networks(value)
        return value

    def client_certificates(self) -> ClientCertificates:
        """How the gateway learns a request's client certificate: its own TLS connection's, or a trusted proxy's
        header (:mod:`docbus.gateway.forwarded_certificates`)."""
        from docbus.gateway.forwarded_certificates import ClientCertificates, parse_networks

        return ClientCertificates(parse_networks(self.trusted_proxies), self.proxy_client_cert_header)

    @model_validator(mode="after")
    def _kafka_security_is_whole(self) -> Settings:
        self.kafka_security()  # a SASL protocol without a password, TLS files for a plain connection, ...
        return self

    def kafka_security(self) -> KafkaSecurity:
        """How this process' Kafka clients connect."""
        password = self.kafka_sasl_password
        key_password = self.kafka_ssl_key_password
        return KafkaSecurity(
            protocol=self.kafka_security_protocol,
            mechanism=self.kafka_sasl_mechanism,
            username=self.kafka_sasl_username,
            password=password.get_secret_value() if password is not None else None,
            ca_file=self.kafka_ssl_ca_file,
            cert_file=self.kafka_ssl_cert_file,
            key_file=self.kafka_ssl_key_file,
            key_password=key_password.get_secret_value() if key_password is not None else None,
        )

    def resolved_database_url(self) -> str:
        """The configured URL, or the embedded SQLite file under ``data_dir``."""
        if self.database_url:
            return self.database_url
        return f"sqlite+aiosqlite:///{(self.data_dir / 'docbus.sqlite3').resolve()}"

    def resolved_payload_dir(self) -> Path:
        return self.payload_dir or (self.data_dir / "payloads")

    def resolved_signing_key_file(self) -> Path:
        return self.signing_key_file or (self.data_dir / "keys" / "receipt-signing.pem")
