"""``docbus config check``: everything a gateway or worker needs, judged before it starts.

A rolling deployment across a province's machines goes wrong in dull ways: a password typed wrong, a routes file
naming an adapter that is not installed, a secret left out, a database already migrated by a newer docbus, a
Kafka that this machine cannot reach, a signing key that exists on one machine only. Each shows up at start-up, on
one machine, in one log. This check runs the same code the processes run (settings, routes, adapter settings,
schemas and policy) and reaches the same services (database, Kafka, each destination as far as its adapter can
tell without sending anything), and answers with one line per part:

- ``ok``: as it should be;
- ``warn``: works, but probably not what was meant (no routes: nothing is forwarded; no signing key yet), or
  a destination that does not answer now (it may be down; deliveries wait for it);
- ``fail``: a process started with this configuration would stop or misbehave.

Nothing is written: no migration, no topic, no key.
"""

from __future__ import annotations

import asyncio
import os
import tempfile
from dataclasses import asdict, dataclass
from typing import Any

from sqlalchemy.engine import make_url
from sqlalchemy.exc import ArgumentError

from docbus.free_space import Verdict, free_space
from docbus.gateway_tls import certificate_report
from docbus.kafka_security import connection_problem
from docbus.routing import LOCAL, RouteTable
from docbus.settings import Settings


@dataclass(frozen=True, slots=True)
class Finding:
    part: str
    verdict: Verdict
    detail: str

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


async def preflight(settings: Settings, *, timeout: float = 10.0) -> list[Finding]:
    """Every finding, in a stable order (the ones that reach a service are bounded by ``timeout`` each)."""
    findings = [_schemas_and_policy(settings), _signing_key(settings), _https(settings), _trusted_proxies(settings)]
    findings.append(_payload_store(settings))
    findings.extend(_free_space(settings))
    findings.append(await _database(settings, timeout))
    findings.append(await _kafka(settings, timeout))
    findings.extend(await _routes_and_adapters(settings, timeout))
    return findings


def _https(settings: Settings) -> Finding:
    """The gateway's certificate and key, loaded as the server will load them (see ``docbus.gateway_tls``)."""
    tls = settings.gateway_tls()
    if tls is None:
        return Finding("https", "ok", "off: plain HTTP (terminate TLS in a proxy in front, or set DOCBUS_TLS_*)")
    try:
        report = certificate_report(tls)
    except (OSError, ValueError) as exc:
        return Finding("https", "fail", f"{tls.cert_file}, {tls.key_file}: {exc}")
    if report.problem:
        return Finding("https", "fail", f"{tls.cert_file}: {report.summary()}: {report.problem}")
    if report.warning:
        return Finding("https", "warn", f"{tls.cert_file}: {report.summary()}: {report.warning}")
    return Finding("https", "ok", f"{tls.cert_file}: {report.summary()}")


def _trusted_proxies(settings: Settings) -> Finding:
    """Whose forwarded client certificates the gateway believes (``DOCBUS_TRUSTED_PROXIES``). Anyone who can
    connect from a trusted address can claim any certificate, so trusting a wide or public network is a warning."""
    networks = settings.client_certificates().trusted_proxies
    if not networks:
        return Finding("proxies", "ok", "none trusted: client certificates come only from the gateway's own TLS")
    listed = ", ".join(str(n) for n in networks)
    detail = f"client certificates forwarded in {settings.proxy_client_cert_header} believed from {listed}"
    wide = [str(n) for n in networks if n.num_addresses > 2**16 or n.is_global]
    if wide:
        return Finding(
            "proxies",
            "warn",
            f"{detail}; {', '.join(wide)} is wide or public: whoever connects from there can claim any certificate "
            "(name the proxies' own addresses)",
        )
    return Finding("proxies", "ok", detail)


def masked_url(url: str) -> str:
    """``url`` with its password hidden; one that cannot be read is hidden whole (it may hold a password)."""
    try:
        return make_url(url).render_as_string(hide_password=True)
    except ArgumentError:
        return "(not a database URL)"


def _schemas_and_policy(settings: Settings) -> Finding:
    from docbus.runtime import validation_policy
    from docbus.schemas.registry import SchemaRegistry
    from docbus.validation import MessageValidator

    try:
        registry = SchemaRegistry()
        MessageValidator(registry, policy=validation_policy(settings))
    except (OSError, ValueError) as exc:
        return Finding("validation", "fail", str(exc))
    schemas = len(registry.list())
    return Finding("validation", "ok", f"{schemas} schemas; XML signatures: {settings.xml_signature_policy.value}")


def _signing_key(settings: Settings) -> Finding:
    from docbus.signing_keys import SigningKeys, read_retired_keys

    path = settings.resolved_signing_key_file()
    if not path.exists():
        return Finding(
            "signing key",
            "warn",
            f"{path} does not exist: the first process creates one; gateways on several machines must share one "
            "file, or their receipts verify only against the keys of the one that answers",
        )
    try:
        keys = SigningKeys(path, create=False)
        read_retired_keys(path)  # a gateway starts without them; the check must not
    except (OSError, ValueError) as exc:
        return Finding("signing key", "fail", f"{path}: {exc}")
    if path.stat().st_mode & 0o077:
        return Finding("signing key", "warn", f"{path} ({keys.key_id}) can be read by other users than its owner")
    return Finding("signing key", "ok", f"{keys.key_id} ({len(keys.retired)} retired, still published)")


def _payload_store(settings: Settings) -> Finding:
    """The claim-check directory must take a file and give it back (an object store would be checked by its
    own implementation)."""
    root = settings.resolved_payload_dir()
    existing = root
    while not existing.exists() and existing != existing.parent:
        existing = existing.parent
    target = root if root.exists() else existing
    if not os.access(target, os.W_OK | os.X_OK):
        return Finding("payload store", "fail", f"{root}: {target} is not writable by this user")
    if root.exists():
        try:
            with tempfile.NamedTemporaryFile(dir=root, prefix=".docbus-check-"):
                pass
        except OSError as exc:
            return Finding("payload store", "fail", f"{root}: {exc}")
    return Finding("payload store", "ok", f"{root} (claim check above {settings.claim_check_bytes} bytes)")


def _free_space(settings: Settings) -> list[Finding]:
    return [Finding("free space", space.verdict, space.describe()) for space in free_space(settings)]


async def _database(settings: Settings, timeout: float) -> Finding:
    from alembic.script import ScriptDirectory
    from sqlalchemy.ext.asyncio import create_async_engine

    from docbus.store.database_tls import postgres_connect_args
    from docbus.store.migrate import alembic_config, current_revision, head_revision

    url = settings.resolved_database_url()
    shown = masked_url(url)
    tls = settings.database_tls()
    if tls is not None:
        shown += f" ({tls.describe()})"
    try:
        engine = create_async_engine(url, connect_args=postgres_connect_args(url, tls))
    except Exception as exc:  # not a URL, or a driver that is not async (postgresql:// without +asyncpg)
        hint = "; docbus speaks to PostgreSQL through asyncpg: postgresql+asyncpg://…" if "postgres" in url else ""
        return Finding("database", "fail", f"{shown}: {type(exc).__name__}: {exc}{hint}")
    if _sqlite_file_missing(url):
        await engine.dispose()
        return Finding("database", "ok", f"{shown}: not created yet (the first process creates and migrates it)")
    try:
        async with asyncio.timeout(timeout):
            revision = await current_revision(engine)
    except TimeoutError:
        return Finding("database", "fail", f"{shown}: no answer in {timeout:g} s")
    except Exception as exc:  # driver errors have no common base: name what was raised
        return Finding("database", "fail", f"{shown}: {type(exc).__name__}: {exc}")
    finally:
        await engine.dispose()
    head = head_revision()
    if revision == head:
        return Finding("database", "ok", f"{shown} at revision {revision} (the newest)")
    if revision is None:
        return Finding("database", "ok", f"{shown}: no docbus schema yet (processes migrate it when they start)")
    known = {script.revision for script in ScriptDirectory.from_config(alembic_config("")).walk_revisions()}
    if revision not in known:
        return Finding(
            "database",
            "fail",
            f"{shown} is at revision {revision}, which this docbus does not know: a newer docbus migrated it",
        )
    return Finding("database", "ok", f"{shown} at revision {revision}; processes migrate it to {head} when they start")


def _sqlite_file_missing(url: str) -> bool:
    """Connecting would create the file: a check must not."""
    if not url.startswith("sqlite"):
        return False
    path = make_url(url).database or ""
    return bool(path) and path != ":memory:" and not os.path.exists(path)


async def _kafka(settings: Settings, timeout: float) -> Finding:
    if not settings.kafka_bootstrap:
        return Finding("broker", "ok", "embedded log in the database (DOCBUS_KAFKA_BOOTSTRAP unset)")
    from aiokafka.admin import AIOKafkaAdminClient

    from docbus.broker.kafka import close_admin
    from docbus.broker.kafka_connections import recording_connections

    where = f"Kafka at {settings.kafka_bootstrap}"
    security = settings.kafka_security()
    try:
        options = security.client_options()
    except ValueError as exc:
        return Finding("broker", "fail", f"{where}: {exc}")
    admin = AIOKafkaAdminClient(
        bootstrap_servers=settings.kafka_bootstrap, request_timeout_ms=int(timeout * 1000), **options
    )
    try:
        async with asyncio.timeout(timeout):
            with recording_connections(admin):
                await admin.start()
            cluster = await admin.describe_cluster()
            topics = await admin.list_topics()
    except Exception as exc:  # aiokafka raises its own errors and asyncio's: all mean "not reachable"
        reason = "no answer" if isinstance(exc, TimeoutError) else f"{type(exc).__name__}: {exc}"
        # aiokafka says only "Unable to bootstrap"; one connection made the same way tells why.
        problem = await connection_problem(settings.kafka_bootstrap, security, timeout=timeout)
        return Finding("broker", "fail", f"{where} ({security.describe()}): {problem or reason}")
    finally:
        await close_admin(admin)
    ours = [t for t in topics if t.startswith(settings.topic_prefix + ".")]
    brokers = len(cluster.get("brokers", []))
    detail = f"{where} ({security.describe()}): {brokers} broker(s), {len(ours)} docbus topics"
    return Finding("broker", "ok", detail)


async def _routes_and_adapters(settings: Settings, timeout: float) -> list[Finding]:
    from docbus.delivery.node import check_destinations

    if settings.routes_file is None:
        return [Finding("routes", "warn", "no routes file (DOCBUS_ROUTES_FILE): messages are accepted, not forwarded")]
    try:
        routes = RouteTable.load(settings.routes_file)
    except (OSError, ValueError, KeyError) as exc:
        return [Finding("routes", "fail", f"{settings.routes_file}: {type(exc).__name__}: {exc}")]
    named = [d for d in routes.destinations if d.name != LOCAL]
    summary = f"{settings.routes_file}: {len(routes.rules)} rules, {len(named)} destinations"
    findings = [Finding("routes", "ok", summary)]
    for check in await check_destinations(settings.adapters, routes, probe_timeout=timeout):
        part = f"destination {check.destination.name}"
        if check.problem:
            findings.append(Finding(part, "fail", check.problem))
        elif check.reach is None:
            findings.append(Finding(part, "ok", f"{check.detail}; not probed (the adapter cannot tell)"))
        else:
            verdict: Verdict = "fail" if check.reach.refused else "ok" if check.reach.reached else "warn"
            findings.append(Finding(part, verdict, f"{check.detail}; {check.reach.detail}"))
    return findings
