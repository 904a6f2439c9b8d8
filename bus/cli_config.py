"""``docbus config check|show``, and how every command reports settings it cannot read: the operator's view of a
deployment's configuration before (and instead of) a stack trace."""

from __future__ import annotations

import argparse
import asyncio
import re
import sys
from typing import Any

import orjson
from pydantic import BaseModel, ValidationError

from docbus.settings import Settings

# Values never printed: a name (setting or adapter key) with one of these words in it holds a credential.
_SECRET_WORDS = re.compile(r"(^|_)(secret|password|passphrase|token|api_?key)(_|$)", re.IGNORECASE)
MASK = "********"


def add_commands(sub: Any) -> None:
    """Register ``config`` on the top-level subparsers ``sub``."""
    config = sub.add_parser("config", help="this deployment's settings: check them against the services, show them")
    actions = config.add_subparsers(metavar="ACTION")
    p = actions.add_parser(
        "check",
        help="settings, routes, adapters, signing key, payload store, database and Kafka, as a process would "
        "find them at start; writes nothing; exit 1 if anything fails",
    )
    p.add_argument("--timeout", type=float, default=10.0, help="seconds to wait for each service (default 10)")
    p.add_argument("--json", action="store_true", help="one JSON object per finding (JSON lines)")
    p.set_defaults(func=_check)
    p = actions.add_parser("show", help="every setting as the processes would read it (credentials masked)")
    p.add_argument("--json", action="store_true", help="an object of environment variable names and values")
    p.set_defaults(func=_show)


def settings_problems(exc: ValidationError) -> list[str]:
    """One line per setting that does not validate, named as it is set (``DOCBUS_…``); a credential's value is
    never repeated."""
    lines = []
    for error in exc.errors():
        location = [str(part) for part in error.get("loc", ())]
        name = "DOCBUS_" + "__".join(location).upper() if location else "settings"
        line = f"{name}: {error.get('msg', 'invalid')}"
        if location and "input" in error and not isinstance(error["input"], dict):
            shown = MASK if _SECRET_WORDS.search(name) else repr(error["input"])
            line += f" (got {shown})"
        lines.append(line)
    return lines


def is_settings_error(exc: ValidationError) -> bool:
    return exc.title == Settings.__name__


def _check(args: argparse.Namespace) -> int:
    from docbus.preflight import preflight

    findings = asyncio.run(preflight(Settings(), timeout=args.timeout))
    for finding in findings:
        if args.json:
            print(orjson.dumps(finding.as_dict()).decode())
        else:
            print(f"{finding.verdict:<5} {finding.part:<28} {finding.detail}")
    failed = sum(f.verdict == "fail" for f in findings)
    warned = sum(f.verdict == "warn" for f in findings)
    if not args.json:
        print(f"{len(findings) - failed - warned} ok, {warned} to look at, {failed} failed", file=sys.stderr)
    return 1 if failed else 0


def _show(args: argparse.Namespace) -> int:
    from docbus.preflight import masked_url

    settings = Settings()
    shown: dict[str, Any] = {}
    for name in type(settings).model_fields:
        value = getattr(settings, name)
        variable = f"DOCBUS_{name.upper()}"
        if name == "adapters":
            for adapter, keys in sorted(value.items()):
                for key, item in sorted(keys.items()):
                    shown[f"DOCBUS_ADAPTERS__{adapter.upper()}__{key.upper()}"] = _masked(key, _plain(item))
            continue
        if name == "database_url" and value:
            value = masked_url(value)
        shown[variable] = _masked(name, _plain(value))
    if args.json:
        print(orjson.dumps(shown, option=orjson.OPT_INDENT_2).decode())
        return 0
    explicit = {f"DOCBUS_{name.upper()}" for name in settings.model_fields_set}
    for variable, value in shown.items():
        origin = "" if variable in explicit or variable.startswith("DOCBUS_ADAPTERS__") else "  (default)"
        print(f"{variable}={'' if value is None else value}{origin}")
    return 0


def _plain(value: Any) -> Any:
    if isinstance(value, BaseModel):
        return value.model_dump(mode="json")
    if hasattr(value, "get_secret_value"):
        return MASK
    if isinstance(value, str | int | float | bool | dict | list) or value is None:
        return value
    return str(getattr(value, "value", value))


def _masked(name: str, value: Any) -> Any:
    return MASK if value is not None and _SECRET_WORDS.search(name) else value
