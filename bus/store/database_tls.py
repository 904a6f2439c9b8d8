"""PostgreSQL over TLS with the server's certificate checked against the operator's CA and the host name.

The database holds every message, receipt and credential hash of a province; between machines its connections are
encrypted and the server is the one it claims to be. ``DOCBUS_DATABASE_SSL_CA_FILE`` names the CA certificates
(PEM) the server's certificate must chain to: every engine docbus makes (the gateways', the workers', the
migrations', the check's) then connects over TLS 1.2 or later and checks the certificate and the host name
(asyncpg's ``verify-full``). Without it the URL decides: asyncpg by itself uses TLS when the server offers it
and checks nothing.
"""

from __future__ import annotations

import ssl
from pathlib import Path
from typing import Any

from docbus.tls_client import checking_context


def postgres_connect_args(url: str, ca_file: Path | None) -> dict[str, Any]:
    """``connect_args`` for an engine on ``url``: a checking TLS context for PostgreSQL when ``ca_file`` is set,
    nothing otherwise. A CA file that cannot be used is a ``ValueError`` that names it."""
    if ca_file is None or not url.startswith("postgresql"):
        return {}
    try:
        return {"ssl": checking_context(ca_file)}
    except (OSError, ssl.SSLError) as exc:
        raise ValueError(f"cannot use the database CA file {ca_file}: {exc}") from exc
