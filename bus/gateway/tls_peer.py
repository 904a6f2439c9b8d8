"""The client certificate of a mutual-TLS connection, in the scope of each of its requests.

uvicorn verifies a client's certificate against ``DOCBUS_TLS_CLIENT_CA_FILE`` during the handshake but does not
tell the application which certificate it was, so a key could not be tied to the system that holds it. This
protocol (uvicorn's own httptools protocol, told to keep what the handshake learnt) puts the certificate into
every request's scope as the ASGI TLS extension says (``extensions["tls"]["client_cert_chain"]``, PEM); the
gateway then checks it against the certificate an agency's key is bound to (``docbus agency bind-certificate``).
"""

from __future__ import annotations

import asyncio
import hashlib
import ssl
from pathlib import Path
from typing import Any

from cryptography import x509
from cryptography.hazmat.primitives.serialization import Encoding
from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol

_TLS_VERSIONS = {"TLSv1.2": 0x0303, "TLSv1.3": 0x0304}
# What ``docbus serve`` and ``docbus gateway`` give uvicorn as ``http`` when they serve HTTPS.
PROTOCOL = "docbus.gateway.tls_peer:PeerCertificateProtocol"


class PeerCertificateProtocol(HttpToolsProtocol):
    """uvicorn's httptools protocol, with the connection's TLS facts in each request's scope."""

    _tls: dict[str, Any] | None = None

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        super().connection_made(transport)
        self._tls = tls_extension(transport)  # after the handshake: one certificate per connection

    def on_message_begin(self) -> None:
        super().on_message_begin()  # builds the request's scope
        if self._tls is not None:
            extensions: dict[str, Any] = {**self.scope.get("extensions", {}), "tls": self._tls}
            self.scope["extensions"] = extensions


def tls_extension(transport: asyncio.BaseTransport) -> dict[str, Any] | None:
    """The ASGI TLS extension of a connection, or ``None`` when it is not TLS."""
    ssl_object = transport.get_extra_info("ssl_object")
    if not isinstance(ssl_object, ssl.SSLObject | ssl.SSLSocket):
        return None
    der = ssl_object.getpeercert(binary_form=True)
    return {
        "server_cert": None,
        "client_cert_chain": [ssl.DER_cert_to_PEM_cert(der)] if der else [],
        "client_cert_name": None,
        "client_cert_error": None,
        "tls_version": _TLS_VERSIONS.get(ssl_object.version() or ""),
        "cipher_suite": None,  # Python's ssl names the suite but does not give its number
    }


def client_certificate_sha256(scope: Any) -> str | None:
    """The SHA-256 fingerprint (hex) of the certificate the client showed, or ``None`` (no TLS, or none shown)."""
    extensions = scope.get("extensions") or {}
    tls = extensions.get("tls") or {}
    chain = tls.get("client_cert_chain") or []
    if not chain:
        return None
    return certificate_sha256(ssl.PEM_cert_to_DER_cert(chain[0]))


def certificate_sha256(der: bytes) -> str:
    """A certificate's fingerprint: SHA-256 over its DER encoding, as ``openssl x509 -fingerprint -sha256`` shows
    it (without the colons, in lower case)."""
    return hashlib.sha256(der).hexdigest()


def certificate_fingerprint(path: Path) -> tuple[str, str]:
    """The SHA-256 fingerprint and subject of the (first) certificate in a PEM or DER file; ``ValueError`` when the
    file holds none."""
    data = path.read_bytes()
    try:
        if b"-----BEGIN" in data:
            certificate = x509.load_pem_x509_certificates(data)[0]
        else:
            certificate = x509.load_der_x509_certificate(data)
    except ValueError as exc:
        raise ValueError(f"{path} holds no X.509 certificate (PEM or DER)") from exc
    return certificate_sha256(certificate.public_bytes(Encoding.DER)), certificate.subject.rfc4514_string()
