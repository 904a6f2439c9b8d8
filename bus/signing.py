"""Signed acceptance receipts: Ed25519 JWS (RFC 7515 compact form, RFC 8037 ``EdDSA``) and the JWKS to check them.

A receipt is the agency's proof that the bus took responsibility for a message: whoever holds it can show, without
asking the bus, which message (sha256, size) was accepted from whom, for whom, and when. The signing key lives in a
PEM file shared by every gateway (``DOCBUS_SIGNING_KEY_FILE``); it is created on first use when absent.
"""

from __future__ import annotations

import base64
import hashlib
import os
from pathlib import Path
from typing import Any

import orjson
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey

RECEIPT_TYP = "docbus-receipt+jws"


def b64url(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")


def b64url_decode(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


def canonical_json(value: Any) -> bytes:
    """Sorted keys, no whitespace: the same fields always give the same bytes."""
    return orjson.dumps(value, option=orjson.OPT_SORT_KEYS)


class ReceiptSigner:
    """Signs receipt payloads with one Ed25519 key and publishes its public half as a JWK."""

    def __init__(self, private_key: Ed25519PrivateKey) -> None:
        self._key = private_key
        raw_public = private_key.public_key().public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)
        self._public_raw = raw_public
        # RFC 7638 thumbprint: a key id that any verifier can recompute from the public key.
        thumb_input = canonical_json({"crv": "Ed25519", "kty": "OKP", "x": b64url(raw_public)})
        self.key_id = b64url(hashlib.sha256(thumb_input).digest())
        self._header_b64 = b64url(canonical_json({"alg": "EdDSA", "kid": self.key_id, "typ": RECEIPT_TYP}))

    @classmethod
    def generate(cls) -> ReceiptSigner:
        return cls(Ed25519PrivateKey.generate())

    def private_pem(self) -> bytes:
        return self._key.private_bytes(
            serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
        )

    @classmethod
    def from_file(cls, path: Path, *, create: bool = True) -> ReceiptSigner:
        """Load the PEM key at ``path``; create it (mode 0600) when missing and ``create`` is set."""
        if not path.exists():
            if not create:
                raise FileNotFoundError(path)
            path.parent.mkdir(parents=True, exist_ok=True)
            # O_EXCL: two gateways starting at once must not each write a different key.
            try:
                fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
            except FileExistsError:
                pass
            else:
                with os.fdopen(fd, "wb") as handle:
                    handle.write(cls.generate().private_pem())
        loaded = serialization.load_pem_private_key(path.read_bytes(), password=None)
        if not isinstance(loaded, Ed25519PrivateKey):
            raise ValueError(f"{path} does not hold an Ed25519 private key")
        return cls(loaded)

    def sign(self, payload: bytes) -> str:
        """Compact JWS over ``payload`` (already canonical JSON)."""
        signing_input = self._header_b64 + "." + b64url(payload)
        signature = self._key.sign(signing_input.encode("ascii"))
        return signing_input + "." + b64url(signature)

    def jwk(self) -> dict[str, str]:
        return {
            "kty": "OKP",
            "crv": "Ed25519",
            "x": b64url(self._public_raw),
            "kid": self.key_id,
            "alg": "EdDSA",
            "use": "sig",
        }

    def jwks(self) -> dict[str, list[dict[str, str]]]:
        return {"keys": [self.jwk()]}


def verify_jws(token: str, jwks: dict[str, Any]) -> dict[str, Any]:
    """Check a compact JWS against a JWKS and return its JSON payload; raises ``ValueError`` when it fails.

    Agencies (and tests) use this to check a receipt offline with nothing but ``GET /v1/keys``.
    """
    try:
        header_b64, payload_b64, signature_b64 = token.split(".")
    except ValueError as exc:
        raise ValueError("not a compact JWS") from exc
    try:
        header = orjson.loads(b64url_decode(header_b64))
    except (ValueError, orjson.JSONDecodeError) as exc:
        raise ValueError("the JWS header is not base64url JSON") from exc
    if not isinstance(header, dict) or header.get("alg") != "EdDSA":
        raise ValueError("unexpected JWS algorithm")
    keys = jwks.get("keys") if isinstance(jwks, dict) else None
    if not isinstance(keys, list):
        raise ValueError("the key set has no list of keys")
    for jwk in keys:
        if not isinstance(jwk, dict):
            raise ValueError("the key set holds something that is not a key")
        if jwk.get("kid") == header.get("kid") and jwk.get("crv") == "Ed25519":
            if not isinstance(jwk.get("x"), str):
                raise ValueError(f"key {jwk.get('kid')} of the set has no public key (x)")
            public = Ed25519PublicKey.from_public_bytes(b64url_decode(jwk["x"]))
            try:
                public.verify(b64url_decode(signature_b64), f"{header_b64}.{payload_b64}".encode("ascii"))
            except InvalidSignature as exc:
                raise ValueError("signature does not verify") from exc
            payload: dict[str, Any] = orjson.loads(b64url_decode(payload_b64))
            return payload
    raise ValueError("no key in the set matches the JWS key id")


def verify_receipt(
    receipt: bytes | dict[str, Any], jwks: dict[str, Any], payload: bytes | None = None
) -> dict[str, Any]:
    """Check an acceptance receipt and return the facts its signature covers; ``ValueError`` says what is wrong.

    The signature must verify with a key of ``jwks`` (the bus' ``GET /v1/keys``, which keeps every retired key),
    the fields shown beside it must be exactly the ones signed (anyone can edit the JSON around a signature), and
    when ``payload`` is given it must be the message the receipt is for (sha256 and size)."""
    shown = orjson.loads(receipt) if isinstance(receipt, bytes) else dict(receipt)
    if not isinstance(shown, dict) or not isinstance(shown.get("signature"), str):
        raise ValueError("not a receipt: no signature field")
    token = shown.pop("signature")
    signed = verify_jws(token, jwks)
    if signed != shown:
        differing = sorted(k for k in signed.keys() | shown.keys() if signed.get(k) != shown.get(k))
        raise ValueError(f"the receipt's fields differ from what was signed: {', '.join(differing)}")
    if payload is not None:
        digest = hashlib.sha256(payload).hexdigest()
        if digest != signed.get("sha256") or len(payload) != signed.get("size"):
            raise ValueError(
                f"the payload is not the message this receipt is for (sha256 {digest}, {len(payload)} bytes; "
                f"the receipt says {signed.get('sha256')}, {signed.get('size')} bytes)"
            )
    return signed
