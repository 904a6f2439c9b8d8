"""The one way docbus checks a server's TLS certificate as a client: Kafka brokers, PostgreSQL, an https:// bus.

The CA file (or, without one, the system's CAs), the server's host name, TLS 1.2 at least, and a client
certificate when the server asks for one. Every caller wraps the errors in its own words: which setting named the
file that could not be used. :func:`load_certificate` is also how the gateway loads its own certificate: every key
docbus loads fails at once with a reason in words, never asking for a password on the terminal.
"""

from __future__ import annotations

import ssl
from collections.abc import Callable
from pathlib import Path


class CertificateUnusable(ValueError):
    """A certificate and key that cannot be loaded; the message says why (the key locked, not the certificate's,
    not a key at all, or OpenSSL's reason). ``key_at_fault``: the key cannot be opened by itself."""

    def __init__(self, reason: str, *, key_at_fault: bool) -> None:
        super().__init__(reason)
        self.key_at_fault = key_at_fault


def load_certificate(context: ssl.SSLContext, cert_file: Path, key_file: Path | None, password: str | None) -> None:
    """``context.load_cert_chain`` without a prompt for a missing password (see :func:`password_answer`);
    :class:`CertificateUnusable` when the pair cannot be used."""
    try:
        context.load_cert_chain(str(cert_file), str(key_file) if key_file else None, password_answer(password))
    except (OSError, ssl.SSLError) as exc:
        opened = key_problem(key_file or cert_file, password)
        if opened:
            raise CertificateUnusable(opened, key_at_fault=True) from exc
        if isinstance(exc, ssl.SSLError) and exc.reason == "KEY_VALUES_MISMATCH":
            raise CertificateUnusable("the key is not the certificate's key", key_at_fault=False) from exc
        reason = exc.reason if isinstance(exc, ssl.SSLError) and exc.reason else exc.strerror or str(exc)
        raise CertificateUnusable(str(reason), key_at_fault=False) from exc


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
    """A client context that checks the server; ``OSError``/``ssl.SSLError`` for a CA file it cannot use,
    :class:`CertificateUnusable` for a client certificate."""
    context = ssl.create_default_context(cafile=str(ca_file) if ca_file else None)
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    if cert_file is not None:
        load_certificate(context, cert_file, key_file, key_password)
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
