"""The receipt-signing key over time, on real files: rotation keeps every old receipt verifiable, a running key ring
changes over by itself, and a receipt is checked field by field, not only its signature."""

from __future__ import annotations

import hashlib
import threading
from pathlib import Path

import orjson
import pytest

from docbus.signing import ReceiptSigner, canonical_json, verify_receipt
from docbus.signing_keys import SigningKeys, read_retired_keys, retired_keys_path, rotate_signing_key

PAYLOAD = b"<edXML>...</edXML>"


def receipt_from(keys: SigningKeys, payload: bytes = PAYLOAD) -> bytes:
    """A receipt shaped as intake issues it (fields plus a JWS over exactly those fields)."""
    fields = {
        "message_id": "01JD0000000000000000000000",
        "sender": "000.00.00.G22",
        "receivers": ["000.00.00.A80"],
        "sha256": hashlib.sha256(payload).hexdigest(),
        "size": len(payload),
    }
    return canonical_json({**fields, "signature": keys.signer().sign(canonical_json(fields))})


def test_rotation_keeps_every_earlier_receipt_verifiable(tmp_path: Path) -> None:
    path = tmp_path / "keys" / "receipt-signing.pem"
    keys = SigningKeys(path, recheck_seconds=0)
    first = receipt_from(keys)
    first_kid = keys.key_id

    retired, new = rotate_signing_key(path)
    assert retired == first_kid and new != first_kid
    second = receipt_from(keys)  # recheck_seconds=0: the ring looks at the files on every use
    assert keys.key_id == new
    rotate_signing_key(path)
    third = receipt_from(keys)

    jwks = keys.jwks()
    assert [k["kid"] for k in jwks["keys"]] == [keys.key_id, first_kid, new]  # current, then oldest first
    assert all("retired_at" in k for k in jwks["keys"][1:]) and "retired_at" not in jwks["keys"][0]
    for receipt in (first, second, third):
        assert verify_receipt(receipt, jwks, PAYLOAD)["size"] == len(PAYLOAD)
    # The private key file is the owner's alone, before and after a rotation.
    assert path.stat().st_mode & 0o777 == 0o600
    assert len(read_retired_keys(path)) == 2


def test_a_ring_changes_over_after_its_recheck_interval_and_jwks_at_once(tmp_path: Path) -> None:
    path = tmp_path / "receipt-signing.pem"
    keys = SigningKeys(path, recheck_seconds=3600)
    old = keys.key_id
    _, new = rotate_signing_key(path)
    assert keys.signer().key_id == old  # not looked at again yet: one clock read per receipt
    assert [k["kid"] for k in keys.jwks()["keys"]] == [new, old]  # the key set always reads the files
    assert keys.signer().key_id == new


def test_unreadable_key_files_leave_the_loaded_key_in_use(tmp_path: Path) -> None:
    path = tmp_path / "receipt-signing.pem"
    keys = SigningKeys(path, recheck_seconds=0)
    kid = keys.key_id
    retired_keys_path(path).write_bytes(b"not json")
    assert keys.signer().key_id == kid
    assert keys.jwks()["keys"][0]["kid"] == kid


def test_concurrent_rotations_retire_each_key_once(tmp_path: Path) -> None:
    path = tmp_path / "receipt-signing.pem"
    SigningKeys(path)
    results: list[tuple[str | None, str]] = []
    threads = [threading.Thread(target=lambda: results.append(rotate_signing_key(path))) for _ in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    retired = [k["kid"] for k in read_retired_keys(path)]
    assert len(retired) == len(set(retired)) == 8
    assert sorted(r for r, _ in results) == sorted(retired)  # each rotation retired the key the previous one made
    assert SigningKeys(path, create=False).key_id not in retired


@pytest.mark.parametrize(
    ("tamper", "complaint"),
    [
        (lambda r: {**r, "sender": "000.00.00.A80"}, "differ from what was signed: sender"),
        (lambda r: {**r, "extra": 1}, "differ from what was signed: extra"),
        (lambda r: {k: v for k, v in r.items() if k != "receivers"}, "differ from what was signed: receivers"),
        (lambda r: {**r, "signature": r["signature"][:-4] + "AAAA"}, "signature does not verify"),
        (lambda r: {**r, "signature": "a.b"}, "not a compact JWS"),
        (lambda r: {**r, "signature": "!!.e30.AA"}, "not base64url JSON"),
        (lambda r: {k: v for k, v in r.items() if k != "signature"}, "no signature field"),
    ],
)
def test_a_receipt_altered_anywhere_is_refused(tmp_path: Path, tamper: object, complaint: str) -> None:
    keys = SigningKeys(tmp_path / "k.pem")
    receipt = orjson.loads(receipt_from(keys))
    with pytest.raises(ValueError, match=complaint):
        verify_receipt(tamper(receipt), keys.jwks())  # type: ignore[operator]


def test_a_receipt_is_refused_for_another_payload_and_by_another_bus(tmp_path: Path) -> None:
    keys = SigningKeys(tmp_path / "k.pem")
    receipt = receipt_from(keys)
    with pytest.raises(ValueError, match="not the message this receipt is for"):
        verify_receipt(receipt, keys.jwks(), PAYLOAD + b" ")
    stranger = {"keys": [ReceiptSigner.generate().jwk()]}
    with pytest.raises(ValueError, match="no key in the set matches"):
        verify_receipt(receipt, stranger)


@pytest.mark.parametrize(
    ("key_set", "complaint"),
    [
        ({}, "no list of keys"),
        ({"keys": "x"}, "no list of keys"),
        ({"keys": ["x"]}, "not a key"),
        ("not an object", "no list of keys"),
    ],
)
def test_a_malformed_key_set_is_a_clear_refusal(tmp_path: Path, key_set: object, complaint: str) -> None:
    receipt = receipt_from(SigningKeys(tmp_path / "k.pem"))
    with pytest.raises(ValueError, match=complaint):
        verify_receipt(receipt, key_set)  # type: ignore[arg-type]


def test_a_key_without_its_public_half_is_a_clear_refusal(tmp_path: Path) -> None:
    keys = SigningKeys(tmp_path / "k.pem")
    jwk = {k: v for k, v in keys.jwks()["keys"][0].items() if k != "x"}
    with pytest.raises(ValueError, match="has no public key"):
        verify_receipt(receipt_from(keys), {"keys": [jwk]})
    broken = {**jwk, "x": "AAAA"}  # not 32 bytes
    with pytest.raises(ValueError, match="32 bytes"):
        verify_receipt(receipt_from(keys), {"keys": [broken]})


def test_a_rotation_over_a_damaged_retired_file_changes_nothing(tmp_path: Path) -> None:
    path = tmp_path / "receipt-signing.pem"
    keys = SigningKeys(path)
    retired_keys_path(path).write_bytes(b'{"keys": "damaged"}')
    with pytest.raises(ValueError, match="not a key set"):
        rotate_signing_key(path)
    survivor = SigningKeys(path, create=False)  # a gateway starting now: signs, publishes the current key only
    assert survivor.key_id == keys.key_id and survivor.retired == []
