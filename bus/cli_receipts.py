"""``docbus signing-key show|rotate`` and ``docbus receipt verify``: the receipt-signing key's life, and the check an
agency (or an auditor) runs on a receipt it holds."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any

import orjson

from docbus.settings import Settings


def add_commands(sub: Any) -> None:
    """Register the commands on the top-level subparsers ``sub``."""
    keys = sub.add_parser("signing-key", help="the key that signs acceptance receipts").add_subparsers(metavar="ACTION")
    p = keys.add_parser("show", help="the current key id and the retired keys still published")
    p.add_argument("--json", action="store_true", help="the key set as GET /v1/keys answers it")
    p.set_defaults(func=_show)
    p = keys.add_parser(
        "rotate",
        help="retire the current key (its public half stays published) and sign with a new one; running "
        "gateways change over within 5 s",
    )
    p.set_defaults(func=_rotate)

    receipt = sub.add_parser("receipt", help="acceptance receipts").add_subparsers(metavar="ACTION")
    p = receipt.add_parser(
        "verify", help="check a receipt's signature (and, with --payload, that it is for that file); exit 1 if not"
    )
    p.add_argument("receipt", type=Path, help="the receipt as the bus returned it (JSON)")
    source = p.add_mutually_exclusive_group()
    source.add_argument("--url", help="fetch the key set from this bus (GET /v1/keys)")
    source.add_argument("--jwks", type=Path, help="a key set saved from GET /v1/keys")
    p.add_argument("--payload", type=Path, help="the file that was submitted")
    p.set_defaults(func=_verify)


def _show(args: argparse.Namespace) -> int:
    from docbus.signing_keys import SigningKeys

    path = Settings().resolved_signing_key_file()
    try:
        keys = SigningKeys(path, create=False)
    except FileNotFoundError:
        print(f"error: no signing key at {path} yet (the first gateway creates one)", file=sys.stderr)
        return 1
    except (OSError, ValueError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    if args.json:
        print(orjson.dumps(keys.jwks(), option=orjson.OPT_INDENT_2).decode())
        return 0
    print(f"current  {keys.key_id}  ({keys.path})")
    for retired in reversed(keys.retired):
        print(f"retired  {retired['kid']}  since {retired.get('retired_at', '?')}")
    return 0


def _rotate(args: argparse.Namespace) -> int:
    from docbus.signing_keys import rotate_signing_key

    try:
        retired, new = rotate_signing_key(Settings().resolved_signing_key_file())
    except (OSError, ValueError) as exc:  # nothing was changed: the retired keys are written first
        print(f"error: the signing key was not rotated: {exc}", file=sys.stderr)
        return 1
    if retired is not None:
        print(f"retired {retired} (still published at /v1/keys: its receipts keep verifying)")
    print(new)
    return 0


def _verify(args: argparse.Namespace) -> int:
    import httpx

    from docbus.signing import verify_receipt

    try:
        receipt = args.receipt.read_bytes()
        payload = args.payload.read_bytes() if args.payload is not None else None
        jwks = _key_set(args)
        facts = verify_receipt(receipt, jwks, payload)
    except (OSError, ValueError, httpx.HTTPError) as exc:
        print(f"receipt not verified: {exc}", file=sys.stderr)
        return 1
    print(orjson.dumps(facts, option=orjson.OPT_INDENT_2).decode())
    covered = " and the payload is the message it is for" if payload is not None else ""
    print(f"receipt verified: signed by the bus{covered}", file=sys.stderr)
    return 0


def _key_set(args: argparse.Namespace) -> dict[str, Any]:
    import httpx

    from docbus.signing_keys import SigningKeys

    if args.jwks is not None:
        loaded = orjson.loads(args.jwks.read_bytes())
    elif args.url is not None:
        response = httpx.get(args.url.rstrip("/") + "/v1/keys", timeout=30)
        response.raise_for_status()
        loaded = response.json()
    else:  # this deployment's own key files
        loaded = SigningKeys(Settings().resolved_signing_key_file(), create=False).jwks()
    if not isinstance(loaded, dict):
        raise ValueError("the key set is not a JSON object")
    return loaded
