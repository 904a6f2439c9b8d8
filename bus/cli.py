"""The ``docbus`` command.

    docbus serve [--host H] [--port P] [--workers N]   gateway on the embedded default (SQLite, no Kafka)
    docbus gateway [...]                               HTTP intake only (scale-out role)
    docbus worker [--metrics-port P]                   outbox sweeper and adapters (scale-out role)
    docbus migrate                                     bring the database to the newest schema
    docbus sim national-axis|provincial-axis [--port P]  an axis simulator
    docbus demo [--port P] [--duration S]              bus, simulators and sample traffic in one process
    docbus agency add ORGAN_ID --name NAME [--role agency|axis|operator] [--parent ORGAN_ID]
    docbus agency list | history ORGAN_ID [--json]
    docbus agency rotate-key ORGAN_ID [--keep-old-for DURATION]
    docbus agency suspend ORGAN_ID --reason TEXT | resume ORGAN_ID
    docbus agency bind-certificate ORGAN_ID CERT [--keep-old-for DURATION] | unbind-certificate ORGAN_ID
    docbus send FILE --key KEY [--url URL] [--idempotency-key K]
    docbus dlq list|show ID|resend ID                  dead letters
    docbus dlq resend --destination NAME [--limit N] [--dry-run]  every waiting dead letter of a destination
    docbus messages list|show ID                       messages and their timelines (list: --sender, --receiver,
                                                       --business-id, --status, --since, --until, --limit)
    docbus audit verify                                recompute every event hash chain
    docbus backup DEST [--json]                        a consistent copy of the embedded data directory
    docbus log groups|forget GROUP|trim                the embedded broker's consumer groups and retention
    docbus topics sync [--dry-run]                     existing Kafka topics get the configured retention
    docbus flows [--since 1h] [--until T] [--sender ORGAN_ID] [--json]  what became of a window's messages
    docbus destinations [--json]                       how each destination fares now, as the workers report it

Configuration comes from ``DOCBUS_*`` environment variables (see ``docbus.settings``).
"""

from __future__ import annotations

import argparse
import asyncio
import sys
from collections.abc import Awaitable, Callable, Coroutine, Sequence
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import TYPE_CHECKING, Any

import orjson

from docbus import cli_config, cli_receipts
from docbus.envelope import MessageStatus
from docbus.settings import Settings

if TYPE_CHECKING:
    from docbus.connectors.client import AgencyClient
    from docbus.routing import RouteTable
    from docbus.store.agencies import Agency
    from docbus.store.database import Database


def main(argv: Sequence[str] | None = None) -> int:
    parser = _parser()
    args = parser.parse_args(argv)
    if not getattr(args, "func", None):
        parser.print_help()
        return 2
    from pydantic import ValidationError
    from pydantic_settings import SettingsError

    try:
        result: int = args.func(args)
    except ValidationError as exc:
        if not cli_config.is_settings_error(exc):
            raise
        for line in cli_config.settings_problems(exc):
            print(f"error: {line}", file=sys.stderr)
        return 2
    except SettingsError as exc:  # a nested setting (DOCBUS_ADAPTERS) that is not JSON; says which, not its value
        print(f"error: {exc}", file=sys.stderr)
        return 2
    return result


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="docbus", description="Document-interconnection message bus.")
    sub = parser.add_subparsers(metavar="COMMAND")

    for name, help_text in (
        ("serve", "run gateway and relay in one process (the embedded default needs nothing else)"),
        ("gateway", "run the HTTP gateway only (publishes what it accepts; workers sweep the rest)"),
    ):
        p = sub.add_parser(name, help=help_text)
        p.add_argument("--host", default="127.0.0.1")
        p.add_argument("--port", type=int, default=8080)
        p.add_argument("--workers", type=int, default=1, help="gateway processes (uvicorn workers)")
        p.add_argument("--log-level", default="info")
        p.set_defaults(
            func=_serve, factory=f"docbus.gateway.app:{'create_serve_app' if name == 'serve' else 'create_gateway_app'}"
        )

    p = sub.add_parser("worker", help="run the outbox sweeper (and adapters): the scale-out worker role")
    p.add_argument("--log-level", default="info")
    p.add_argument("--metrics-port", type=int, help="serve Prometheus metrics at http://HOST:PORT/metrics")
    p.add_argument("--metrics-host", default="127.0.0.1")
    p.set_defaults(func=_worker)

    p = sub.add_parser("sim", help="run an axis simulator: docbus sim national-axis|provincial-axis [--port P]")
    p.add_argument("sim_args", nargs=argparse.REMAINDER)
    p.set_defaults(func=_sim)

    p = sub.add_parser("demo", help="the bus, both axis simulators and sample traffic, on this machine")
    p.add_argument("--port", type=int, default=8080)
    p.add_argument("--samples", type=Path, help="folder of edXML packets (default: shared/samples/edxml)")
    p.add_argument("--data-dir", type=Path, help="default: a new temporary folder")
    p.add_argument("--duration", type=float, help="stop after this many seconds (default: until Ctrl-C)")
    p.set_defaults(func=_demo)

    p = sub.add_parser("migrate", help="bring the database to the newest schema")
    p.set_defaults(func=_migrate)

    agency = sub.add_parser("agency", help="the agency directory").add_subparsers(metavar="ACTION")
    p = agency.add_parser("add", help="register an agency and print its new API key (last line)")
    p.add_argument("organ_id")
    p.add_argument("--name", required=True)
    p.add_argument("--role", choices=["agency", "axis", "operator"], default="agency")
    p.add_argument("--parent")
    p.set_defaults(func=_agency_add)
    p = agency.add_parser("list", help="list registered agencies")
    p.set_defaults(func=_agency_list)
    p = agency.add_parser(
        "history", help="what was done to an agency's entry (registered, key rotated, suspended, ...), by whom, when"
    )
    p.add_argument("organ_id")
    p.add_argument("--json", action="store_true", help="one JSON object per change")
    p.set_defaults(func=_agency_history)
    p = agency.add_parser(
        "rotate-key", help="issue a new API key (last line); the old one stops working, or with --keep-old-for later"
    )
    p.add_argument("organ_id")
    p.add_argument(
        "--keep-old-for",
        type=_duration,
        metavar="DURATION",
        help="keep the old key working this long (15m, 2h, 1d; at most 30 days) while the agency switches",
    )
    p.set_defaults(func=_agency_rotate)
    p = agency.add_parser("suspend", help="refuse the agency's key (403 with the reason) until it is resumed")
    p.add_argument("organ_id")
    p.add_argument("--reason", required=True, help="told to the agency with every refusal")
    p.add_argument("--actor", default="operator-cli", help="who decided (kept with the suspension)")
    p.set_defaults(func=_agency_suspend)
    p = agency.add_parser("resume", help="accept a suspended agency's key again")
    p.add_argument("organ_id")
    p.set_defaults(func=_agency_resume)
    p = agency.add_parser(
        "bind-certificate",
        help="accept the agency's key only over mutual TLS with this client certificate (PEM or DER file)",
    )
    p.add_argument("organ_id")
    p.add_argument("certificate", type=Path)
    p.add_argument(
        "--keep-old-for",
        type=_duration,
        metavar="DURATION",
        help="keep the certificate bound so far accepted this long (15m, 2h, 1d; at most 30 days) while the "
        "agency's system switches to the new one",
    )
    p.set_defaults(func=_agency_bind)
    p = agency.add_parser("unbind-certificate", help="accept the agency's key with any client certificate again")
    p.add_argument("organ_id")
    p.set_defaults(func=_agency_unbind)

    dlq = sub.add_parser("dlq", help="dead letters").add_subparsers(metavar="ACTION")
    p = dlq.add_parser("list", help="list dead letters, newest first")
    p.add_argument("--destination")
    p.add_argument("--limit", type=int, default=50)
    p.set_defaults(func=_dlq, action="list")
    p = dlq.add_parser("show", help="show one dead letter with every attempt")
    p.add_argument("id", type=int)
    p.set_defaults(func=_dlq, action="show")
    p = dlq.add_parser(
        "resend",
        help="put a dead letter back in front of its destination, or with --destination every one still waiting",
    )
    p.add_argument("id", type=int, nargs="?")
    p.add_argument("--destination", help="put back every waiting dead letter of this destination, oldest first")
    p.add_argument("--limit", type=int, help="with --destination: at most this many")
    p.add_argument("--dry-run", action="store_true", help="with --destination: only list what would go back")
    p.add_argument("--actor", default="operator-cli")
    p.set_defaults(func=_dlq, action="resend")

    messages = sub.add_parser("messages", help="look at messages").add_subparsers(metavar="ACTION")
    p = messages.add_parser("list", help="newest messages first")
    p.add_argument("--sender")
    p.add_argument("--business-id")
    p.add_argument(
        "--status", type=_status, metavar="STATUS", help="one of " + ", ".join(MessageStatus) + " (any letter case)"
    )
    p.add_argument("--receiver", help="messages addressed to this organ id")
    p.add_argument("--since", help="received at or after: 15m, 2h, 1d back from now, or an ISO 8601 instant")
    p.add_argument("--until", help="received before: a duration back from now, or an ISO 8601 instant")
    p.add_argument("--limit", type=int, default=20)
    p.set_defaults(func=_messages, action="list")
    p = messages.add_parser("show", help="a message with its timeline")
    p.add_argument("id")
    p.set_defaults(func=_messages, action="show")

    audit = sub.add_parser("audit", help="the audit log").add_subparsers(metavar="ACTION")
    p = audit.add_parser(
        "verify", help="recompute every message's event hash chain and every agency's chain of directory changes"
    )
    p.set_defaults(func=_audit_verify)

    log = sub.add_parser("log", help="the embedded broker's log: consumer groups, retention").add_subparsers(
        metavar="ACTION"
    )
    p = log.add_parser("groups", help="each consumer group's position, lag and last commit, per partition")
    p.set_defaults(func=_log, action="groups")
    p = log.add_parser("forget", help="delete a retired group's offsets so retention no longer waits for it")
    p.add_argument("group")
    p.set_defaults(func=_log, action="forget")
    p = log.add_parser("trim", help="one retention pass now, with DOCBUS_EMBEDDED_LOG_RETENTION_HOURS")
    p.set_defaults(func=_log, action="trim")

    topics = sub.add_parser("topics", help="docbus' Kafka topics").add_subparsers(metavar="ACTION")
    p = topics.add_parser(
        "sync", help="give existing topics the settings docbus gives new ones (DOCBUS_KAFKA_RETENTION_HOURS)"
    )
    p.add_argument("--dry-run", action="store_true", help="only list what would change")
    p.set_defaults(func=_topics_sync)

    payloads_help = "payload retention and orphaned payload files"
    payloads = sub.add_parser("payloads", help=payloads_help).add_subparsers(metavar="ACTION")
    p = payloads.add_parser("purge", help="one payload retention pass now, with DOCBUS_PAYLOAD_RETENTION_DAYS")
    p.add_argument("--days", type=float, help="the retention for this pass (default: DOCBUS_PAYLOAD_RETENTION_DAYS)")
    p.add_argument("--dry-run", action="store_true", help="count the payloads that would go; delete nothing")
    p.set_defaults(func=_payloads_purge)
    p = payloads.add_parser("orphans", help="payload files no message refers to (left by crashes); --delete them")
    p.add_argument("--delete", action="store_true", help="remove them (default: list them)")
    p.add_argument(
        "--grace-minutes",
        type=float,
        default=60.0,
        help="leave files younger than this alone: their submissions may still be committing (default 60)",
    )
    p.set_defaults(func=_payloads_orphans)

    p = sub.add_parser("backup", help="a consistent copy of the embedded data directory, while docbus runs")
    p.add_argument("destination", type=Path, help="a folder that does not exist yet (or is empty)")
    p.add_argument("--json", action="store_true", help="print the manifest (BACKUP.json) instead of a summary")
    p.set_defaults(func=_backup)

    p = sub.add_parser("flows", help="what became of the messages received in a window, per sender and destination")
    p.add_argument("--since", default="1h", help="a duration back from --until (15m, 2h, 1d) or an ISO 8601 instant")
    p.add_argument("--until", help="a duration back from now or an ISO 8601 instant (default: now)")
    p.add_argument("--sender", help="only this sending agency")
    p.add_argument("--json", action="store_true", help="the report as GET /v1/flows answers it")
    p.set_defaults(func=_flows)

    p = sub.add_parser("destinations", help="how each destination fares now, as the workers report it")
    p.add_argument("--json", action="store_true", help="the overview as GET /v1/destinations answers it")
    p.set_defaults(func=_destinations)

    p = sub.add_parser(
        "check", help="intake's checks on files or folders, offline, with this deployment's policy; stores nothing"
    )
    p.add_argument("paths", type=Path, nargs="+", metavar="FILE|DIR", help=".xml/.edxml/.json files, or folders")
    p.add_argument("--json", action="store_true", help="one JSON object per file (JSON lines)")
    p.set_defaults(func=_check)

    p = sub.add_parser(
        "hot-folder", help="submit the files an agency system drops in a folder (for systems that only export files)"
    )
    p.add_argument("folder", type=Path, help="where the system writes .edxml, .xml and .json files")
    key = p.add_mutually_exclusive_group(required=True)
    key.add_argument("--key", help="the agency's API key (visible to other users in the process list)")
    key.add_argument("--key-file", type=Path, help="a file holding the agency's API key")
    p.add_argument("--url", default="http://127.0.0.1:8080")
    p.add_argument("--ca-file", type=Path, help="CA certificates (PEM) of an https:// bus not signed by a public CA")
    _client_certificate_arguments(p)
    p.add_argument("--interval", type=float, default=1.0, help="seconds between looks at the folder (default 1)")
    p.add_argument("--settle", type=float, default=2.0, help="take a file once unchanged this long (default 2 s)")
    p.add_argument("--once", action="store_true", help="one pass, then exit: 0 all sent, 1 some refused or waiting")
    p.set_defaults(func=_hot_folder)

    cli_receipts.add_commands(sub)
    cli_config.add_commands(sub)

    p = sub.add_parser("send", help="submit a file as an agency and print the receipt or the errors")
    p.add_argument("file", type=Path)
    p.add_argument("--key", required=True, help="the agency's API key")
    p.add_argument("--url", default="http://127.0.0.1:8080")
    p.add_argument("--ca-file", type=Path, help="CA certificates (PEM) of an https:// bus not signed by a public CA")
    _client_certificate_arguments(p)
    p.add_argument("--idempotency-key", help="default: one made for this submission, the same on every attempt")
    p.add_argument(
        "--attempts",
        type=int,
        default=5,
        help="tries after a broken connection, 429 or 502-504, with the same Idempotency-Key (default 5)",
    )
    p.add_argument("--validate-only", action="store_true", help="use the conformance sandbox; store nothing")
    p.set_defaults(func=_send)
    return parser


def _migrate_settings(settings: Settings) -> None:
    from docbus.store.database import Database
    from docbus.store.migrate import upgrade

    db = Database.from_settings(settings)  # creates the data dir for the embedded default
    upgrade(db.url, tls=settings.database_tls())


def _status(value: str) -> MessageStatus:
    try:
        return MessageStatus(value)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{value!r} is not one of {', '.join(MessageStatus)}") from None


async def _existing_database(settings: Settings) -> Database | None:
    """The database for a command that only reads or repairs (``messages``, ``dlq``, ``audit``, ``flows``), or
    ``None`` after saying on stderr why not: such a command must not create an empty database (or a data
    directory) where there was none, nor read one whose schema is not the one this docbus expects. Called in the
    command's own event loop: a pooled PostgreSQL connection belongs to the loop that opened it."""
    from docbus.store.database import Database
    from docbus.store.migrate import current_revision, head_revision

    if not settings.database_url and not (settings.data_dir / "docbus.sqlite3").is_file():
        print(
            f"error: no docbus database in {settings.data_dir.resolve()} (set DOCBUS_DATA_DIR or"
            " DOCBUS_DATABASE_URL, or create one with `docbus migrate`)",
            file=sys.stderr,
        )
        return None
    db = Database.from_settings(settings)
    try:
        found = await current_revision(db.reader)
    except Exception as exc:
        problem = f"error: cannot read the database: {exc}"
    else:
        expected = head_revision()
        if found == expected:
            return db
        if found is None:
            problem = "error: the database holds no docbus schema; create it with `docbus migrate`"
        else:
            problem = (
                f"error: the database schema is at revision {found}, this docbus expects {expected}: `docbus migrate`"
            )
    await db.dispose()
    print(problem, file=sys.stderr)
    return None


def _on_existing_database(settings: Settings, work: Callable[[Database], Awaitable[int]]) -> int:
    """Run ``work`` on the deployment's database in an event loop of its own and close the database after; exit 1
    (having said why) where there is no database of the schema this docbus expects (``_existing_database``)."""

    async def run() -> int:
        db = await _existing_database(settings)
        if db is None:
            return 1
        try:
            return await work(db)
        finally:
            await db.dispose()

    return asyncio.run(run())


def _share_metrics_between(workers: int) -> None:
    """Several gateway processes write their metrics to one fresh directory (see ``docbus.metrics``), set in
    the environment before they start, and removed when this command ends; a directory set by the operator
    (``PROMETHEUS_MULTIPROC_DIR``) is used as it is."""
    import atexit
    import os
    import shutil
    import tempfile

    from docbus.metrics import MULTIPROCESS_DIR_VARIABLE

    if workers < 2 or os.environ.get(MULTIPROCESS_DIR_VARIABLE):
        return
    directory = tempfile.mkdtemp(prefix="docbus-metrics-")
    atexit.register(shutil.rmtree, directory, ignore_errors=True)
    os.environ[MULTIPROCESS_DIR_VARIABLE] = directory


def _log_to_stderr(level: str) -> None:
    """Logging of a command that is not a uvicorn server (worker, hot folder): time, level, logger, message."""
    import logging

    from docbus.log_filters import Repeats

    logging.basicConfig(level=level.upper(), format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    for handler in logging.getLogger().handlers:
        handler.addFilter(Repeats())


def _server_logging(level: str) -> dict[str, Any]:
    """uvicorn's logging, plus docbus' own loggers at ``level`` through the same handler: without them the
    gateway's messages below WARNING (a signing key changed over, a relay taking over rows) went nowhere; and
    aiokafka's warnings and errors, their repeats left out."""
    import copy

    from uvicorn.config import LOGGING_CONFIG

    config: dict[str, Any] = copy.deepcopy(LOGGING_CONFIG)
    config["formatters"]["docbus"] = {
        "()": "uvicorn.logging.DefaultFormatter",
        "fmt": "%(levelprefix)s %(name)s: %(message)s",
    }
    config.setdefault("filters", {})["repeats"] = {"()": "docbus.log_filters.Repeats"}
    config["handlers"]["docbus"] = {
        "formatter": "docbus",
        "class": "logging.StreamHandler",
        "stream": "ext://sys.stderr",
        "filters": ["repeats"],
    }
    config["loggers"]["docbus"] = {"handlers": ["docbus"], "level": level.upper(), "propagate": False}
    # aiokafka's complaints (a failed connection every half second while a broker is away or refuses docbus'
    # credentials) through the same handler, the repeats left out (docbus.log_filters).
    config["loggers"]["aiokafka"] = {"handlers": ["docbus"], "level": "WARNING", "propagate": False}
    return config


def _serve(args: argparse.Namespace) -> int:
    import uvicorn

    _share_metrics_between(args.workers)
    settings = Settings()
    tls = settings.gateway_tls()
    https: dict[str, Any] = {}
    if tls is not None:
        from docbus.gateway_tls import ServingCertificateFactory, certificate_report

        try:
            report = certificate_report(tls)
        except (OSError, ValueError) as exc:
            print(f"error: HTTPS: {tls.cert_file}, {tls.key_file}: {exc}", file=sys.stderr)
            return 2
        if report.problem:
            print(f"error: HTTPS: {tls.cert_file}: {report.problem}", file=sys.stderr)
            return 2
        if report.warning:
            print(f"warning: HTTPS: {tls.cert_file}: {report.warning}", file=sys.stderr)
        from docbus.gateway.tls_peer import PROTOCOL

        # uvicorn's httptools protocol, keeping the client's certificate for keys bound to one.
        https = {
            "ssl_context_factory": ServingCertificateFactory(tls, settings.tls_reload_check_seconds),
            "http": PROTOCOL,
        }
    if args.factory.endswith(":create_serve_app") and not _destinations_buildable(settings):
        return 2
    _migrate_settings(settings)
    uvicorn.run(
        args.factory,
        factory=True,
        host=args.host,
        port=args.port,
        workers=args.workers,
        loop="uvloop",
        log_level=args.log_level,
        log_config=_server_logging(args.log_level),
        access_log=False,
        # The connection's own address, never one a request claims in X-Forwarded-For: DOCBUS_TRUSTED_PROXIES
        # decides whose forwarded client certificates are believed, and docbus uses no other client address.
        proxy_headers=False,
        **({"http": "httptools"} | https),
    )
    return 0


def _worker(args: argparse.Namespace) -> int:

    from docbus.worker import run_worker

    _log_to_stderr(args.log_level)
    settings = Settings()
    if not _destinations_buildable(settings):
        return 2
    _migrate_settings(settings)
    if args.metrics_port is not None:
        from prometheus_client import start_http_server

        start_http_server(args.metrics_port, addr=args.metrics_host)
    _run_on_uvloop(run_worker(settings))
    return 0


def _destinations_buildable(settings: Settings) -> bool:
    """Whether every destination this process would forward to can be built from its settings; when not, one
    line per destination on stderr (the adapter and the setting at fault, never a value), before anything starts.
    """
    if settings.routes_file is None or not settings.forwarding_enabled:
        return True
    from docbus.delivery.node import check_destinations

    routes = _routes(settings)
    if routes is None:
        return False
    checks = asyncio.run(check_destinations(settings.adapters, routes))
    for check in checks:
        if check.problem:
            print(f"error: destination {check.destination.name}: {check.problem}", file=sys.stderr)
    return not any(check.problem for check in checks)


def _routes(settings: Settings) -> RouteTable | None:
    """The routes file's table; ``None`` (the reason printed) when it cannot be read."""
    from docbus.routing import RouteTable

    try:
        return RouteTable.load(settings.routes_file)
    except (OSError, ValueError, KeyError) as exc:
        print(f"error: routes: {settings.routes_file}: {type(exc).__name__}: {exc}", file=sys.stderr)
        return None


def _run_on_uvloop(main: Coroutine[Any, Any, None]) -> None:
    """Run the worker on uvloop when it is installed (as for the gateway, which uvicorn runs on it): a worker
    makes thousands of small socket reads and writes a second (Kafka, the axes, its database thread), and
    asyncio's pure-Python event loop costs noticeably more CPU per turn."""
    try:
        import uvloop
    except ImportError:  # pragma: no cover - platforms without uvloop
        asyncio.run(main)
        return
    uvloop.run(main)


def _sim(args: argparse.Namespace) -> int:
    from docbus.simulators import main as simulator_main

    return simulator_main(args.sim_args)


def _demo(args: argparse.Namespace) -> int:
    from docbus.demo import default_samples_dir, run_demo

    try:
        return asyncio.run(
            run_demo(
                port=args.port,
                samples=args.samples or default_samples_dir(),
                data_dir=args.data_dir,
                duration=args.duration,
            )
        )
    except KeyboardInterrupt:
        return 0


def _migrate(_args: argparse.Namespace) -> int:
    _migrate_settings(Settings())
    print("database is at the newest schema")
    return 0


def _with_directory(action: str, args: argparse.Namespace) -> int:
    from docbus.errors import RequestRejected
    from docbus.store.agencies import AgencyDirectory, Role
    from docbus.store.database import Database

    settings = Settings()
    _migrate_settings(settings)

    async def run() -> int:
        db = Database.from_settings(settings)
        directory = AgencyDirectory(db)
        try:
            if action == "add":
                agency, key = await directory.add(
                    args.organ_id, name=args.name, role=Role(args.role), parent=args.parent
                )
                print(f"registered {agency.organ_id} ({agency.name}) as {agency.role.value}, level {agency.level}")
                if agency.role in (Role.AGENCY, Role.AXIS) and settings.kafka_bootstrap:
                    await _create_topic_ahead(settings, db, agency.organ_id)
                print(key)
            elif action == "rotate":
                key = await directory.rotate_key(args.organ_id, keep_old_for=args.keep_old_for)
                rotated = await directory.get(args.organ_id)
                if rotated is not None and rotated.previous_key_expires_at is not None:
                    until = rotated.previous_key_expires_at
                    print(f"the old key of {args.organ_id} keeps working until {until:%Y-%m-%d %H:%M:%S} UTC")
                print(key)
            elif action == "suspend":
                await directory.suspend(args.organ_id, args.reason, by=args.actor)
                print(f"{args.organ_id} is suspended: its key is refused until `docbus agency resume {args.organ_id}`")
            elif action == "resume":
                await directory.resume(args.organ_id)
                print(f"{args.organ_id} is resumed: its key works again")
            elif action == "bind":
                from docbus.gateway.tls_peer import certificate_fingerprint

                try:
                    fingerprint, subject = certificate_fingerprint(args.certificate)
                except (OSError, ValueError) as exc:
                    print(f"error: {exc}", file=sys.stderr)
                    return 2
                bound = await directory.bind_certificate(args.organ_id, fingerprint, keep_old_for=args.keep_old_for)
                print(f"the key of {args.organ_id} is accepted only over mutual TLS with {subject}")
                print(f"  (the certificate with SHA-256 fingerprint {fingerprint})")
                previous = bound.previous_certificate()
                if previous is not None:
                    old_sha256, until = previous
                    print(f"  and, until {until:%Y-%m-%d %H:%M:%S} UTC, with the one bound before ({old_sha256[:16]}…)")
                if settings.tls_client_ca_file is None and not settings.trusted_proxies:
                    print(
                        "warning: this gateway neither asks clients for certificates (DOCBUS_TLS_CLIENT_CA_FILE) nor "
                        f"believes a proxy's (DOCBUS_TRUSTED_PROXIES): {args.organ_id}'s key is refused until it does",
                        file=sys.stderr,
                    )
            elif action == "unbind":
                await directory.bind_certificate(args.organ_id, None)
                print(f"the key of {args.organ_id} is accepted with any client certificate again")
            elif action == "history":
                changes = await directory.history(args.organ_id)
                if not changes and await directory.get(args.organ_id) is None:
                    print(f"error: no agency {args.organ_id} is registered", file=sys.stderr)
                    return 1
                for change in changes:
                    if args.json:
                        print(orjson.dumps(change.as_dict()).decode())
                    else:
                        shown = " ".join(f"{k}={v}" for k, v in change.detail.items() if v is not None)
                        print(
                            f"{change.seq}\t{change.at:%Y-%m-%d %H:%M:%S} UTC\t{change.actor}\t{change.action}\t{shown}"
                        )
            else:
                for a in await directory.list():
                    print("\t".join(_agency_line(a)))
            return 0
        except RequestRejected as exc:
            print(f"error: {exc.detail}", file=sys.stderr)
            return 1
        finally:
            await db.dispose()

    return asyncio.run(run())


async def _create_topic_ahead(settings: Settings, db: Database, organ_id: str) -> None:
    """The new agency's Kafka topic, so that consumers already running are assigned it before its first message
    (see ``DeliveryNode._create_agency_topics``); with Kafka away, its first message creates it."""
    from docbus.broker import broker_from_settings
    from docbus.broker.base import BrokerError
    from docbus.topics import Topics

    topic = Topics(settings.topic_prefix).agency(organ_id)
    broker = broker_from_settings(settings, db)
    try:
        await broker.start()
        await broker.ensure_topics([topic])
        print(f"created topic {topic}")
    except BrokerError as exc:
        print(f"warning: topic {topic} not created now ({exc}); its first message will create it", file=sys.stderr)
    finally:
        await broker.aclose()


def _agency_add(args: argparse.Namespace) -> int:
    return _with_directory("add", args)


def _agency_list(args: argparse.Namespace) -> int:
    return _with_directory("list", args)


def _agency_history(args: argparse.Namespace) -> int:
    return _with_directory("history", args)


def _agency_rotate(args: argparse.Namespace) -> int:
    return _with_directory("rotate", args)


def _agency_suspend(args: argparse.Namespace) -> int:
    return _with_directory("suspend", args)


def _agency_resume(args: argparse.Namespace) -> int:
    return _with_directory("resume", args)


def _agency_bind(args: argparse.Namespace) -> int:
    return _with_directory("bind", args)


def _agency_unbind(args: argparse.Namespace) -> int:
    return _with_directory("unbind", args)


def _agency_line(agency: Agency) -> list[str]:
    """What ``agency list`` shows of one agency (never its key: keys are shown once)."""
    line = [agency.organ_id, agency.role.value, f"level {agency.level}", f"{agency.key_prefix}…", agency.name]
    overlap = agency.previous_key_expires_at
    if overlap is not None and overlap > datetime.now(UTC):
        line.append(f"old key until {overlap:%Y-%m-%d %H:%M} UTC")
    if agency.client_cert_sha256 is not None:
        line.append(f"only with the client certificate SHA-256 {agency.client_cert_sha256[:16]}…")
    previous = agency.previous_certificate()
    if previous is not None:
        line.append(f"old certificate {previous[0][:16]}… until {previous[1]:%Y-%m-%d %H:%M} UTC")
    if agency.suspended_at is not None:
        line.append(
            f"SUSPENDED since {agency.suspended_at:%Y-%m-%d %H:%M} UTC by {agency.suspended_by}: "
            f"{agency.suspended_reason}"
        )
    return line


def _duration(text: str) -> timedelta:
    from docbus.flows import parse_duration

    duration = parse_duration(text)
    if duration is None:
        raise argparse.ArgumentTypeError(f"{text!r} is not a duration such as 15m, 2h or 1d")
    return duration


def _dump(value: object) -> None:
    print(orjson.dumps(value, option=orjson.OPT_INDENT_2).decode())


def _dlq(args: argparse.Namespace) -> int:
    from docbus.broker import broker_from_settings
    from docbus.delivery.dead_letters import DeadLetterStore, check_destination
    from docbus.errors import RequestRejected
    from docbus.routing import RouteTable
    from docbus.topics import Topics

    settings = Settings()
    usage = _resend_usage_error(args) if args.action == "resend" else None
    if usage is not None:
        print(f"error: {usage}", file=sys.stderr)
        return 2

    async def work(db: Database) -> int:
        broker = broker_from_settings(settings, db)
        store = DeadLetterStore(db, broker, Topics(settings.topic_prefix))
        try:
            if args.action == "list":
                for d in await store.list(destination=args.destination, limit=args.limit):
                    state = f"resent {d.resent_at:%Y-%m-%d %H:%M}" if d.resent_at else "dead"
                    print(f"{d.id}\t{d.destination}\t{d.message_id}\t{state}\t{d.reason[:80]}")
            elif args.action == "show":
                _dump((await store.get(args.id)).as_dict())
            elif args.id is not None:
                await broker.start()
                _dump((await store.resend(args.id, actor=args.actor)).as_dict())
            else:
                check_destination(
                    args.destination, [d.name for d in RouteTable.load(settings.routes_file).destinations]
                )
                if not args.dry_run:
                    await broker.start()
                outcome = await store.resend_waiting(
                    args.destination, actor=args.actor, limit=args.limit, dry_run=args.dry_run
                )
                _dump(outcome.as_dict())
                if outcome.refused:
                    print(
                        f"error: {len(outcome.refused)} dead letter(s) could not go back (see refused)", file=sys.stderr
                    )
                    return 1
            return 0
        except RequestRejected as exc:
            print(f"error: {exc.detail}", file=sys.stderr)
            return 1
        finally:
            await broker.aclose()

    return _on_existing_database(settings, work)


def _resend_usage_error(args: argparse.Namespace) -> str | None:
    if (args.id is None) == (args.destination is None):
        return "give a dead letter's ID or --destination NAME (not both)"
    if args.id is not None and (args.limit is not None or args.dry_run):
        return "--limit and --dry-run go with --destination"
    if args.limit is not None and args.limit < 1:
        return "--limit must be at least 1"
    return None


def _messages(args: argparse.Namespace) -> int:
    from docbus.flows import BadWindow, arrival_bounds
    from docbus.store.messages import MessageStore

    try:
        since, until = arrival_bounds(args.since, args.until) if args.action == "list" else (None, None)
    except BadWindow as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2

    async def work(db: Database) -> int:
        store = MessageStore(db)
        if args.action == "list":
            found = await store.search(
                visible_to=None,
                sender=args.sender,
                business_id=args.business_id,
                status=args.status,
                receiver=args.receiver,
                since=since,
                until=until,
                limit=args.limit,
            )
            for m in found:
                print(f"{m.id}\t{m.kind}\t{m.status}\t{m.sender}\t{m.business_id}")
            return 0
        record = await store.get(args.id)
        if record is None:
            print(f"error: no message {args.id}", file=sys.stderr)
            return 1
        _dump({**record.as_dict(), "events": [e.as_dict() for e in await store.timeline(args.id)]})
        return 0

    return _on_existing_database(Settings(), work)


def _audit_verify(_args: argparse.Namespace) -> int:
    from docbus.audit_verify import verify_agencies, verify_all

    async def work(db: Database) -> int:
        checked, event_count, problems = await verify_all(db)
        for problem in problems:
            print(problem)
        print(f"{checked} messages, {event_count} events checked: {len(problems)} problems")
        organs, changes, directory_problems = await verify_agencies(db)
        for problem in directory_problems:
            print(problem)
        print(f"{organs} agencies, {changes} directory changes checked: {len(directory_problems)} problems")
        return 1 if problems or directory_problems else 0

    return _on_existing_database(Settings(), work)


def _log(args: argparse.Namespace) -> int:
    """Exit 0 on success, 1 when the database or the group stands in the way, 2 when the log is in Kafka."""
    from docbus.broker.embedded_groups import GroupInUse, forget_group, group_positions
    from docbus.broker.embedded_retention import EmbeddedLogRetention

    settings = Settings()
    if settings.kafka_bootstrap:
        print(
            "error: DOCBUS_KAFKA_BOOTSTRAP is set: the log is in Kafka (use kafka-consumer-groups.sh)", file=sys.stderr
        )
        return 2

    async def work(db: Database) -> int:
        if args.action == "groups":
            print("group\ttopic\tpartition\tcommitted\tend\tlag\tearliest kept\tlast commit")
            for g in await group_positions(db):
                earliest = "-" if g.earliest is None else g.earliest
                print(
                    f"{g.group}\t{g.topic}\t{g.partition}\t{g.committed}\t{g.end}\t{g.lag}\t{earliest}\t"
                    f"{g.committed_at:%Y-%m-%d %H:%M:%S}"
                )
        elif args.action == "forget":
            try:
                count = await forget_group(db, args.group)
            except GroupInUse as exc:
                print(f"error: {exc}", file=sys.stderr)
                return 1
            if not count:
                print(f"error: no offsets of group {args.group!r}", file=sys.stderr)
                return 1
            print(f"forgot group {args.group}: {count} committed offsets deleted")
        else:
            hours = settings.embedded_log_retention_hours
            if hours <= 0:
                print("retention is off (DOCBUS_EMBEDDED_LOG_RETENTION_HOURS=0): nothing deleted")
                return 0
            report = await EmbeddedLogRetention(db, retention_seconds=hours * 3600).trim_once()
            for (topic, partition), count in sorted(report.deleted.items()):
                print(f"{topic}\t{partition}\t{count} deleted")
            print(f"{report.total} records deleted")
        return 0

    return _on_existing_database(settings, work)


def _topics_sync(args: argparse.Namespace) -> int:
    from docbus.broker import BrokerError, kafka_from_settings

    settings = Settings()
    if not settings.kafka_bootstrap:
        print("error: DOCBUS_KAFKA_BOOTSTRAP is not set (the embedded log has its own retention)", file=sys.stderr)
        return 1
    if settings.kafka_retention_hours is None:
        print("DOCBUS_KAFKA_RETENTION_HOURS is not set: docbus gives its topics no settings of its own")
        return 0
    broker = kafka_from_settings(settings, settings.kafka_bootstrap)

    async def sync() -> int:
        try:
            changes = await broker.align_topic_configs(settings.topic_prefix, dry_run=args.dry_run)
        except BrokerError as exc:
            print(f"error: {exc}", file=sys.stderr)
            return 1
        finally:
            await broker.aclose()
        verb = "would change" if args.dry_run else "changed"
        for change in changes:
            before = change.before if change.before is not None else "(the broker's default)"
            print(f"{change.topic}\t{change.name}\t{verb} {before} -> {change.after}")
        if not changes:
            print(f"every topic under {settings.topic_prefix}. already has the configured settings")
        return 0

    return asyncio.run(sync())


def _payloads_purge(args: argparse.Namespace) -> int:
    """Exit 0 after the pass, 1 when the database stands in the way, 2 when no retention is given."""
    from docbus.payload_retention import PayloadRetention
    from docbus.payload_store import DirectoryPayloadStore
    from docbus.routing import RouteTable
    from docbus.runtime import LocalAgencies
    from docbus.store.agencies import AgencyDirectory

    settings = Settings()
    days = args.days if args.days is not None else settings.payload_retention_days
    if days is None or days <= 0:
        print("error: no retention: set DOCBUS_PAYLOAD_RETENTION_DAYS or give --days (more than 0)", file=sys.stderr)
        return 2

    async def work(db: Database) -> int:
        local = LocalAgencies(AgencyDirectory(db))
        await local.refresh()
        retention = PayloadRetention(
            db,
            DirectoryPayloadStore(settings.resolved_payload_dir()),
            RouteTable.load(settings.routes_file),
            local.current,
            retention_seconds=days * 86400,
        )
        report = await retention.purge_once(dry_run=args.dry_run)
        verb = "would be deleted" if args.dry_run else "deleted"
        print(f"{report.purged} payloads {verb}; {report.kept} older than {days:g} days not settled, kept")
        return 0

    return _on_existing_database(settings, work)


def _payloads_orphans(args: argparse.Namespace) -> int:
    """Exit 0 when there are none (or all were removed), 3 when orphans were listed and left, 1 when the
    database stands in the way, 2 for a negative grace."""
    from docbus.payload_orphans import remove_orphans
    from docbus.payload_store import DirectoryPayloadStore

    if args.grace_minutes < 0:
        print("error: --grace-minutes must not be negative", file=sys.stderr)
        return 2
    settings = Settings()

    async def work(db: Database) -> int:
        store = DirectoryPayloadStore(settings.resolved_payload_dir())
        report = await remove_orphans(db, store, grace_seconds=args.grace_minutes * 60, delete=args.delete)
        for orphan in report.orphans:
            print(f"{orphan.path}\t{orphan.size}")
        size = f"{report.bytes / 1_000_000:.1f} MB"
        if args.delete:
            print(f"{report.removed} payload files no message refers to removed ({size})")
            return 0
        print(f"{len(report.orphans)} payload files no message refers to ({size}); --delete removes them")
        return 3 if report.orphans else 0

    return _on_existing_database(settings, work)


def _backup(args: argparse.Namespace) -> int:
    """Exit 0 with the backup made, 1 when it was refused (and nothing is left at the destination)."""
    from docbus.backup import BackupRefused, backup

    try:
        report = backup(Settings(), args.destination)
    except BackupRefused as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    if args.json:
        _dump(report.as_dict())
    else:
        print(
            f"backed up {report.messages} messages ({report.database_bytes} bytes of database, "
            f"{report.payload_files} payload files) to {report.destination}"
        )
    return 0


def _flows(args: argparse.Namespace) -> int:
    from docbus.flows import BadWindow, flow_report, parse_window, render_report

    try:
        window = parse_window(args.since, args.until)
    except BadWindow as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2

    async def work(db: Database) -> int:
        report = await flow_report(db, window, sender=args.sender)
        if args.json:
            _dump(report)
        else:
            print(render_report(report))
        return 0

    return _on_existing_database(Settings(), work)


def _destinations(args: argparse.Namespace) -> int:
    from docbus.destinations import destinations_overview, render_overview

    settings = Settings()
    routes = _routes(settings)
    if routes is None:
        return 2

    async def work(db: Database) -> int:
        overview = await destinations_overview(db, routes, report_seconds=settings.health_report_seconds)
        if args.json:
            _dump({"destinations": overview})
        else:
            print(render_overview(overview))
        return 0

    return _on_existing_database(settings, work)


def _check(args: argparse.Namespace) -> int:
    """Exit 0 when every file would be accepted, 1 when any would be refused, 2 when none was found."""
    from docbus.check_files import check_file, files_under, render
    from docbus.runtime import validation_policy
    from docbus.schemas.registry import SchemaRegistry
    from docbus.validation import MessageValidator

    settings = Settings()
    try:
        validator = MessageValidator(SchemaRegistry(), policy=validation_policy(settings))
    except ValueError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    refused = checked = 0
    for path in files_under(args.paths):
        verdict = check_file(path, validator, settings.max_body_bytes)
        checked += 1
        refused += verdict.accepted is None
        print(orjson.dumps(verdict.as_dict()).decode() if args.json else render(verdict), flush=True)
    if not checked:
        print("error: no .xml, .edxml or .json file found", file=sys.stderr)
        return 2
    if not args.json:
        print(f"{checked - refused} of {checked} would be accepted", file=sys.stderr)
    return 1 if refused else 0


def _client_certificate_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--client-cert", type=Path, help="the agency system's certificate (PEM), for a bus on mutual TLS"
    )
    parser.add_argument("--client-key", type=Path, help="the key of --client-cert (PEM)")
    parser.add_argument(
        "--client-key-password-file",
        type=Path,
        metavar="FILE",
        help="the password of an encrypted --client-key, as the first line of FILE (never on the command line)",
    )


def _agency_client(args: argparse.Namespace, key: str) -> AgencyClient | None:
    """The client of ``docbus send`` and ``docbus hot-folder``; ``None`` (the reason printed) when the TLS files
    given cannot be used."""
    import ssl

    from docbus.connectors.client import AgencyClient

    if (args.client_cert is None) != (args.client_key is None):
        print("error: --client-cert and --client-key go together", file=sys.stderr)
        return None
    password = None
    if args.client_key_password_file is not None:
        if args.client_key is None:
            print("error: --client-key-password-file opens a --client-key; give one", file=sys.stderr)
            return None
        try:
            password = args.client_key_password_file.read_text(encoding="utf-8").splitlines()[0]
        except (OSError, UnicodeDecodeError, IndexError) as exc:
            reason = "it is empty" if isinstance(exc, IndexError) else exc
            print(f"error: cannot read the password in {args.client_key_password_file}: {reason}", file=sys.stderr)
            return None
    try:
        return AgencyClient(
            args.url,
            key,
            ca_file=args.ca_file,
            cert_file=args.client_cert,
            key_file=args.client_key,
            key_password=password,
        )
    except (OSError, ssl.SSLError, ValueError) as exc:
        files = ", ".join(str(f) for f in (args.ca_file, args.client_cert, args.client_key) if f is not None)
        hint = " (give it with --client-key-password-file)" if "no password is set" in str(exc) else ""
        print(f"error: cannot use the TLS files {files}: {exc}{hint}", file=sys.stderr)
        return None


def _hot_folder(args: argparse.Namespace) -> int:
    import signal

    from docbus.connectors.hot_folder import FolderBusy, HotFolder

    _log_to_stderr("info")
    key = args.key if args.key is not None else args.key_file.read_text().strip()

    async def run() -> int:
        bus = _agency_client(args, key)
        if bus is None:
            return 2
        async with bus as client:
            folder = HotFolder(args.folder, client, settle_seconds=args.settle)
            with folder.served():
                if args.once:
                    report = await folder.run_once()
                    print(f"{report.sent} sent, {report.refused} refused, {report.waiting} waiting")
                    return 0 if report.clean else 1
                stop = asyncio.Event()
                loop = asyncio.get_running_loop()
                for signum in (signal.SIGINT, signal.SIGTERM):
                    loop.add_signal_handler(signum, stop.set)
                await folder.run(stop, interval=args.interval)
                return 0

    try:
        return asyncio.run(run())
    except FolderBusy as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2


def _send(args: argparse.Namespace) -> int:
    import httpx

    from docbus.connectors.client import (
        SubmissionRefused,
        broken_after_connecting,
        certificate_refused,
        content_type_for,
    )

    path: Path = args.file
    payload = path.read_bytes()

    async def run() -> int:
        bus = _agency_client(args, args.key)
        if bus is None:
            return 2
        async with bus as client:
            try:
                if args.validate_only:
                    result = await client.validate(payload, content_type_for(path))
                else:
                    result = await client.submit(
                        payload, content_type_for(path), idempotency_key=args.idempotency_key, attempts=args.attempts
                    )
            except SubmissionRefused as exc:
                print(orjson.dumps(exc.problem, option=orjson.OPT_INDENT_2).decode(), file=sys.stderr)
                return 1
            except httpx.TransportError as exc:
                if certificate_refused(exc):
                    print(f"the bus at {args.url} has a TLS certificate that is not trusted: {exc}", file=sys.stderr)
                    print("(a bus with a certificate from its own CA: --ca-file CA.pem)", file=sys.stderr)
                else:
                    print(f"the bus at {args.url} could not be reached: {exc!r}", file=sys.stderr)
                    if args.url.startswith("https:") and broken_after_connecting(exc):
                        print(
                            "(a bus on mutual TLS resets the connections of clients without a certificate it "
                            "accepts: --client-cert CERT.pem --client-key KEY.pem)",
                            file=sys.stderr,
                        )
                return 1
        print(orjson.dumps(result, option=orjson.OPT_INDENT_2).decode())
        return 0

    return asyncio.run(run())


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
