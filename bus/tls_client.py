"""The one way docbus checks a server's TLS certificate as a client: Kafka brokers, PostgreSQL, an https:// bus.

The CA file (or, without one, the system's CAs), the server's host name, TLS 1.2 at least, and a client
certificate when the server asks for one. Every caller wraps the errors in its own words: which setting named the
file that could not be used.
"""

from __future__ import annotations

import ssl
from collections.abc import Callable
from pathlib import Path


def password_answer(password: str | None) -> str | Callable[[], str]:
    """What to pass ``load_cert_chain`` as the key's password. Given none, OpenSSL asks for it on the terminal:
    a service started from a shell would wait there for ever, and one without a terminal fails with "Invalid
    argument". A callable that answers nothing makes an encrypted key fail at once instead, with a reason."""
    return password if password else _no_password


def _no_password() -> str:
    return ""


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
        context.load_cert_chain(str(cert_file), str(key_file) if key_file else None, password_answer(key_password))
    return context


def key_problem(key_file: Path | None, password: str | None) -> str | None:
    """Why a private key cannot be opened, in words OpenSSL's "PEM lib" does not give; ``None`` when it opens (so
    the certificate is at fault, or the two are not a pair) or cannot be read (OpenSSL's reason says so)."""
    from cryptography.hazmat.primitives.serialization import load_pem_private_key

    if key_file is None:
        return None
    try:
        load_pem_private_key(key_file.read_bytes(), password.encode() if password else None)
    except OSError:
        return None
    except TypeError:  # encrypted and no password given, or a password for a plain key
        return "the key is encrypted and no password is set" if not password else None
    except ValueError:
        if password:
            return "the password does not open the key (or it is not a PEM private key)"
        return "the key is not a PEM private key"
    return None
