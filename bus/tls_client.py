"""The one way docbus checks a server's TLS certificate as a client: Kafka brokers, PostgreSQL, an https:// bus.

The CA file (or, without one, the system's CAs), the server's host name, TLS 1.2 at least, and a client
certificate when the server asks for one. Every caller wraps the errors in its own words: which setting named the
file that could not be used.
"""

from __future__ import annotations

import ssl
from pathlib import Path


def checking_context(
    ca_file: Path | None,
    *,
    cert_file: Path | None = None,
    key_file: Path | None = None,
    key_password: str | None = None,
) -> ssl.SSLContext:
    """A client context that checks the server; ``OSError``/``ssl.SSLError`` for files it cannot use."""
    context = ssl.create_default_context(cafile=str(ca_file) if ca_file else None)
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    if cert_file is not None:
        context.load_cert_chain(str(cert_file), str(key_file) if key_file else None, key_password)
    return context
