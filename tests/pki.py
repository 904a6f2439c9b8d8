"""A certificate authority made in a test, as a province's own CA: server certificates for loopback and client
certificates for mutual TLS, written as PEM files."""

from __future__ import annotations

import datetime as dt
import ipaddress
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID


def _name(common_name: str) -> x509.Name:
    return x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common_name)])


class Pki:
    """A CA in ``folder`` (``ca.pem``) that issues certificates into the same folder."""

    def __init__(self, folder: Path, name: str = "Test provincial CA") -> None:
        self.folder = folder
        folder.mkdir(parents=True, exist_ok=True)
        now = dt.datetime.now(dt.UTC)
        self._key = ec.generate_private_key(ec.SECP256R1())
        self._ca = (
            x509.CertificateBuilder()
            .subject_name(_name(name))
            .issuer_name(_name(name))
            .public_key(self._key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - dt.timedelta(days=400))
            .not_valid_after(now + dt.timedelta(days=3650))
            .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
            .add_extension(
                x509.KeyUsage(True, False, False, False, False, True, True, False, False), critical=True
            )  # digital signature, certificate and CRL signing
            .sign(self._key, hashes.SHA256())
        )
        self.ca_file = folder / "ca.pem"
        self.ca_file.write_bytes(self._ca.public_bytes(serialization.Encoding.PEM))

    def server(self, stem: str = "server", *, valid_days: float = 365, expired: bool = False) -> tuple[Path, Path]:
        """A server certificate for 127.0.0.1 (CN docbus.example.gov.vn) and its key: (cert, key)."""
        now = dt.datetime.now(dt.UTC)
        start = now - dt.timedelta(days=300) if expired else now - dt.timedelta(minutes=5)
        end = now - dt.timedelta(days=1) if expired else now + dt.timedelta(days=valid_days)
        san = x509.SubjectAlternativeName([x509.IPAddress(ipaddress.ip_address("127.0.0.1"))])
        return self._issue(stem, "docbus.example.gov.vn", start, end, ExtendedKeyUsageOID.SERVER_AUTH, san)

    def client(self, stem: str, common_name: str, *, password: str | None = None) -> tuple[Path, Path]:
        """A client certificate for mutual TLS and its key (encrypted with ``password`` if given): (cert, key)."""
        now = dt.datetime.now(dt.UTC)
        end = now + dt.timedelta(days=365)
        return self._issue(
            stem, common_name, now - dt.timedelta(minutes=5), end, ExtendedKeyUsageOID.CLIENT_AUTH, None, password
        )

    def _issue(
        self,
        stem: str,
        common_name: str,
        start: dt.datetime,
        end: dt.datetime,
        usage: x509.ObjectIdentifier,
        san: x509.SubjectAlternativeName | None,
        password: str | None = None,
    ) -> tuple[Path, Path]:
        key = ec.generate_private_key(ec.SECP256R1())
        builder = (
            x509.CertificateBuilder()
            .subject_name(_name(common_name))
            .issuer_name(self._ca.subject)
            .public_key(key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(start)
            .not_valid_after(end)
            .add_extension(x509.ExtendedKeyUsage([usage]), critical=False)
        )
        if san is not None:
            builder = builder.add_extension(san, critical=False)
        cert = builder.sign(self._key, hashes.SHA256())
        cert_file, key_file = self.folder / f"{stem}-cert.pem", self.folder / f"{stem}-key.pem"
        cert_file.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
        encryption = (
            serialization.BestAvailableEncryption(password.encode())
            if password is not None
            else serialization.NoEncryption()
        )
        pem = key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, encryption)
        key_file.write_bytes(pem)
        return cert_file, key_file


def make_pki(folder: Path, *, valid_days: float = 365, expired: bool = False) -> tuple[Path, Path, Path]:
    """A CA, and a server certificate it signed for 127.0.0.1; (ca.pem, cert, key)."""
    pki = Pki(folder)
    cert_file, key_file = pki.server(valid_days=valid_days, expired=expired)
    return pki.ca_file, cert_file, key_file
