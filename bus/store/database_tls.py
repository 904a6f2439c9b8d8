"""PostgreSQL over TLS with the server's certificate checked against the operator's CA and the host name, and a
client certificate for a server that authenticates docbus by one.

The database holds every message, receipt and credential hash of a province; between machines its connections are
encrypted and the server is the one it claims to be. ``DOCBUS_DATABASE_SSL_CA_FILE`` names the CA certificates
(PEM) the server's certificate must chain to: every engine docbus makes (the gateways', the workers', the
migrations', the check's) then connects over TLS 1.2 or later and checks the certificate and the host name
(asyncpg's ``verify-full``). ``DOCBUS_DATABASE_SSL_CERT_FILE`` and ``…_KEY_FILE`` (``…_KEY_PASSWORD`` when the key
is encrypted) add a client certificate, for a server whose ``pg_hba.conf`` says ``cert`` (or ``clientcert``) for
docbus' role; with one and no CA file, the server is checked against the system's CAs. Without any of them the URL
decides: asyncpg by itself uses TLS when the server offers it and checks nothing.
"""

from __future__ import annotations

import ssl
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from docbus.tls_client import checking_context


@dataclass(frozen=True, slots=True)
class DatabaseTls:
    ca_file: Path | None = None
    cert_file: Path | None = None
    key_file: Path | None = None
    key_password: str | None = None

    def describe(self) -> str:
        """How ``docbus config check`` shows it (paths, never the password)."""
        parts = [f"CA {self.ca_file}" if self.ca_file else "system CAs"]
        if self.cert_file is not None:
            parts.append(f"client certificate {self.cert_file}")
        return "TLS, " + ", ".join(parts)


def postgres_connect_args(url: str, tls: DatabaseTls | None) -> dict[str, Any]:
    """``connect_args`` for an engine on ``url``: a checking TLS context for PostgreSQL when ``tls`` is given,
    nothing otherwise. Files that cannot be used are a ``ValueError`` that names them (never the password)."""
    if tls is None or not url.startswith("postgresql"):
        return {}
    try:
        return {
            "ssl": checking_context(
                tls.ca_file, cert_file=tls.cert_file, key_file=tls.key_file, key_password=tls.key_password
            )
        }
    except (OSError, ssl.SSLError, ValueError) as exc:
        files = ", ".join(str(f) for f in (tls.ca_file, tls.cert_file, tls.key_file) if f is not None)
        raise ValueError(f"cannot use the database TLS files {files}: {exc}") from exc
