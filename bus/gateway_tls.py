"""HTTPS for the gateway: its certificate and key, checked before the server starts and reported by the check.

Agencies present their API keys in every request, so between machines the gateway is reached over TLS: either a
proxy in front terminates it, or the gateway does, with ``DOCBUS_TLS_CERT_FILE`` (the certificate chain, PEM) and
``DOCBUS_TLS_KEY_FILE`` (its key, ``DOCBUS_TLS_KEY_PASSWORD`` if encrypted). :func:`certificate_report` loads
them as the server will, so a key that does not match its certificate, a file that cannot be read or a
certificate that has expired is found by ``docbus config check`` and stops ``docbus serve`` with one line, not a
traceback from inside the server, and one about to expire is a warning.
"""

from __future__ import annotations

import datetime as dt
import ssl
from dataclasses import dataclass
from pathlib import Path

from docbus.tls_client import key_problem, password_answer

SOON = dt.timedelta(days=30)


@dataclass(frozen=True, slots=True)
class GatewayTls:
    cert_file: Path
    key_file: Path
    key_password: str | None = None


@dataclass(frozen=True, slots=True)
class CertificateReport:
    subject: str
    not_after: dt.datetime
    problem: str | None  # why it cannot serve, if it cannot
    warning: str | None  # why an operator should look soon

    def summary(self) -> str:
        return f"{self.subject}, valid until {self.not_after:%Y-%m-%d}"


def certificate_report(tls: GatewayTls, *, now: dt.datetime | None = None) -> CertificateReport:
    """Loads the certificate chain and key as the server will; ``OSError``/``ValueError`` with the reason when
    they cannot be used at all."""
    from cryptography import x509  # here: every command reads the settings, which name GatewayTls

    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    try:
        context.load_cert_chain(str(tls.cert_file), str(tls.key_file), password_answer(tls.key_password))
    except ssl.SSLError as exc:
        opened = key_problem(tls.key_file, tls.key_password)
        if opened:
            raise ValueError(f"{opened} (DOCBUS_TLS_KEY_PASSWORD)") from exc
        raise ValueError(f"the certificate and key cannot serve TLS: {exc.reason or exc}") from exc
    leaf = x509.load_pem_x509_certificates(tls.cert_file.read_bytes())[0]
    now = now or dt.datetime.now(dt.UTC)
    subject = leaf.subject.rfc4514_string() or "(no subject)"
    not_after = leaf.not_valid_after_utc
    problem = warning = None
    if not_after <= now:
        problem = f"the certificate expired on {not_after:%Y-%m-%d}"
    elif leaf.not_valid_before_utc > now:
        problem = f"the certificate is valid only from {leaf.not_valid_before_utc:%Y-%m-%d}"
    elif not_after - now < SOON:
        warning = f"the certificate expires on {not_after:%Y-%m-%d}, in {(not_after - now).days} days"
    return CertificateReport(subject, not_after, problem, warning)
