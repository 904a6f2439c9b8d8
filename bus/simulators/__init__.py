"""Axis simulators: real HTTP servers speaking the national axis' (VXP) and a provincial platform's (LGSP) APIs.

They check credentials the way the real ones do, keep what they receive (``GET /_sim/received``), honour
idempotency keys, answer every document with business receipts from each receiver (status 01 → 03 → 06, or
02 when told to refuse) and take injected faults (``POST /_sim/faults``). Used by ``docbus sim``, ``docbus demo``
and the adapter tests.

    docbus sim national-axis --port 9101            → main(["national-axis", "--port", "9101"])
    run_simulator("provincial-axis", port=9102)     blocking, until interrupted

    async with serve(create_app("national-axis", SimulatorConfig(receipt_delays=(0.05, 0.1, 0.15)))) as url:
        ...                                         in the running event loop, on a free loopback port
"""

from __future__ import annotations

import argparse
from collections.abc import Sequence
from typing import Literal

from fastapi import FastAPI

from docbus.simulators import national_axis, provincial_axis
from docbus.simulators.common import AxisState, Faults, ServerTls, SimulatorConfig, run_app, serve

SimulatorKind = Literal["national-axis", "provincial-axis"]
KINDS: tuple[SimulatorKind, ...] = ("national-axis", "provincial-axis")
DEFAULT_PORTS: dict[SimulatorKind, int] = {"national-axis": 9101, "provincial-axis": 9102}

__all__ = [
    "DEFAULT_PORTS",
    "KINDS",
    "AxisState",
    "Faults",
    "ServerTls",
    "SimulatorConfig",
    "SimulatorKind",
    "create_app",
    "main",
    "run_simulator",
    "serve",
]


def create_app(kind: SimulatorKind, config: SimulatorConfig | None = None) -> FastAPI:
    """The simulator app of ``kind``; its in-memory axis is ``app.state.axis``."""
    if kind == "national-axis":
        return national_axis.create_app(config)
    if kind == "provincial-axis":
        return provincial_axis.create_app(config)
    raise ValueError(f"unknown simulator {kind!r} (one of: {', '.join(KINDS)})")


def run_simulator(
    kind: SimulatorKind,
    *,
    host: str = "127.0.0.1",
    port: int | None = None,
    system_id: str = "docbus",
    secret: str = "docbus-secret",  # noqa: S107 - a simulator's documented default
    receipt_delays: tuple[float, float, float] = (0.2, 0.5, 1.0),
    token_ttl: float = 3600.0,
    keep_packets: int = 50_000,
    log_level: str = "info",
    tls: ServerTls | None = None,
) -> None:
    """Serve one simulator until interrupted (blocking); ``port`` defaults to :data:`DEFAULT_PORTS`; ``tls``:
    HTTPS, with mutual TLS when it names a client CA."""
    config = SimulatorConfig(
        system_id=system_id,
        secret=secret,
        receipt_delays=receipt_delays,
        token_ttl=token_ttl,
        keep_packets=keep_packets,
    )
    run_app(create_app(kind, config), host=host, port=port or DEFAULT_PORTS[kind], log_level=log_level, tls=tls)


def main(argv: Sequence[str] | None = None) -> int:
    """``docbus sim {national-axis|provincial-axis} [--host H] [--port P] [--system-id ID] [--secret S]
    [--receipt-delays 0.2,0.5,1.0] [--token-ttl SECONDS] [--keep-packets N] [--log-level LEVEL]
    [--tls-cert PEM --tls-key PEM [--client-ca PEM]]``."""
    parser = argparse.ArgumentParser(prog="docbus sim", description="Run an axis simulator.")
    parser.add_argument("kind", choices=KINDS)
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, help="default 9101 (national axis) or 9102 (provincial axis)")
    parser.add_argument("--system-id", default="docbus")
    parser.add_argument("--secret", default="docbus-secret")
    parser.add_argument(
        "--receipt-delays", type=_delays, default=(0.2, 0.5, 1.0), help="seconds to status 01, 03, 06 (a,b,c)"
    )
    parser.add_argument("--token-ttl", type=float, default=3600.0, help="provincial axis login token lifetime")
    parser.add_argument(
        "--keep-packets", type=_at_least_one, default=50_000, help="packets remembered with their receipts"
    )
    parser.add_argument("--log-level", default="info")
    parser.add_argument("--tls-cert", help="serve HTTPS with this certificate chain (PEM)")
    parser.add_argument("--tls-key", help="the key of --tls-cert (PEM, not encrypted)")
    parser.add_argument("--client-ca", help="mutual TLS: accept only clients with a certificate this CA signed")
    args = parser.parse_args(argv)
    if (args.tls_cert is None) != (args.tls_key is None):
        parser.error("--tls-cert and --tls-key go together")
    if args.client_ca is not None and args.tls_cert is None:
        parser.error("--client-ca needs --tls-cert and --tls-key")
    tls = ServerTls(args.tls_cert, args.tls_key, args.client_ca) if args.tls_cert is not None else None
    run_simulator(
        args.kind,
        host=args.host,
        port=args.port,
        system_id=args.system_id,
        secret=args.secret,
        receipt_delays=args.receipt_delays,
        token_ttl=args.token_ttl,
        keep_packets=args.keep_packets,
        log_level=args.log_level,
        tls=tls,
    )
    return 0


def _delays(text: str) -> tuple[float, float, float]:
    try:
        first, second, third = (float(part) for part in text.split(","))
    except ValueError as exc:
        raise argparse.ArgumentTypeError("three comma-separated numbers of seconds, e.g. 0.2,0.5,1.0") from exc
    return first, second, third


def _at_least_one(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        value = 0
    if value < 1:
        raise argparse.ArgumentTypeError("a whole number of packets, at least 1")
    return value
