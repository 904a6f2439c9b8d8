"""Reading a client certificate: from a file an operator binds, and from a request's ASGI TLS extension."""

from __future__ import annotations

import ssl
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes

from docbus.gateway.tls_peer import certificate_fingerprint, client_certificate_sha256

from ..pki import Pki


def test_a_certificate_file_gives_its_fingerprint_in_pem_and_der(tmp_path: Path) -> None:
    cert_file, key_file = Pki(tmp_path).client("g22", "000.00.00.G22")
    expected = x509.load_pem_x509_certificate(cert_file.read_bytes()).fingerprint(hashes.SHA256()).hex()
    assert certificate_fingerprint(cert_file) == (expected, "CN=000.00.00.G22")
    der = tmp_path / "g22.der"
    der.write_bytes(ssl.PEM_cert_to_DER_cert(cert_file.read_text()))
    assert certificate_fingerprint(der) == (expected, "CN=000.00.00.G22")

    other_pem = tmp_path / "other.pem"  # PEM blocks, none of them a certificate
    other_pem.write_bytes(b"-----BEGIN NOTHING-----\nAAAA\n-----END NOTHING-----\n")
    for not_a_certificate in (key_file, other_pem):
        with pytest.raises(ValueError, match=r"holds no X\.509 certificate"):
            certificate_fingerprint(not_a_certificate)
    garbage = tmp_path / "garbage.bin"
    garbage.write_bytes(b"\x30\x03\x02\x01")
    with pytest.raises(ValueError, match=r"holds no X\.509 certificate"):
        certificate_fingerprint(garbage)


def test_the_fingerprint_of_what_a_request_showed(tmp_path: Path) -> None:
    cert_file, _ = Pki(tmp_path).client("g22", "000.00.00.G22")
    expected, _ = certificate_fingerprint(cert_file)
    shown = {"extensions": {"tls": {"client_cert_chain": [cert_file.read_text()]}}}
    assert client_certificate_sha256(shown) == expected
    assert client_certificate_sha256({"extensions": {"tls": {"client_cert_chain": []}}}) is None  # TLS, none shown
    assert client_certificate_sha256({"type": "http"}) is None  # plain HTTP
