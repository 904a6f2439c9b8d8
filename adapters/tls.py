"""TLS towards a destination: whose CA its certificate must chain to, and the certificate docbus presents.

A province's LGSP, the national axis and many agencies' own systems serve certificates issued by a government CA
that no operating system trusts out of the box, and some of them accept a connection only from a client that
shows a certificate of its own (mutual TLS). Every HTTP adapter therefore takes, beside its URL
(``DOCBUS_ADAPTERS__<NAME>__*``):

- ``ca_file``: the CA certificates (PEM) the destination's certificate must chain to; without it, the system's;
- ``cert_file`` and ``key_file`` (``key_password`` when the key is encrypted): the client certificate (chain,
  PEM) and its key, for a destination that asks for one.

The host name is always checked, and TLS 1.2 is the least accepted (``docbus.tls_client``). The files are loaded
when the settings are validated, so a missing file, a key that is not the certificate's or a wrong password
stops the worker at start-up and fails ``docbus config check``, naming the setting and never a secret; TLS
settings on a plain ``http://`` URL are refused too, since nothing would ever use them.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import ssl
from pathlib import Path
from typing import Any, Self
from urllib.parse import urlsplit

from pydantic import PrivateAttr, SecretStr, model_validator

from docbus.adapters.base import AdapterSettings, Reach
from docbus.tls_client import CertificateUnusable, checking_context, load_certificate

TLS_SETTINGS = ("ca_file", "cert_file", "key_file", "key_password")
# After the handshake a probe waits this long for the server to hang up on it; a server that takes the client
# waits for its request instead (for seconds: its keep-alive timeout).
HANG_UP_SECONDS = 1.0


class TlsClientSettings(AdapterSettings):
    """The TLS settings of an adapter that speaks HTTP(S) to ``url``."""

    url: str
    ca_file: Path | None = None
    cert_file: Path | None = None
    key_file: Path | None = None
    key_password: SecretStr | None = None
    _context: ssl.SSLContext | None = PrivateAttr(default=None)  # built once, from the files as validated

    @model_validator(mode="after")
    def _usable_tls(self) -> Self:
        given = [name for name in TLS_SETTINGS if getattr(self, name) is not None]
        if not given:
            return self
        if urlsplit(self.url).scheme != "https":
            raise ValueError(f"{', '.join(given)} need an https:// url; this one is not")
        if self.cert_file is None and (self.key_file is not None or self.key_password is not None):
            raise ValueError("key_file and key_password belong to a client certificate: set cert_file too")
        if self.cert_file is not None and self.key_file is None:
            raise ValueError("cert_file needs key_file, the client certificate's key")
        # The files as the connections will load them: a problem shows now, not per delivery.
        self._context = self._build_context()
        return self

    def ssl_context(self) -> ssl.SSLContext | None:
        """The client context for the destination (every client of the adapter shares it); ``None`` when no TLS
        setting is given (the system's CAs)."""
        return self._context

    def _build_context(self) -> ssl.SSLContext:
        """``ValueError`` naming the setting whose file cannot be used."""
        for name in ("ca_file", "cert_file", "key_file"):
            path: Path | None = getattr(self, name)
            if path is not None and not path.is_file():
                raise ValueError(f"{name}: no such file: {path}")
        password = self.key_password.get_secret_value() if self.key_password is not None else None
        try:
            context = checking_context(self.ca_file)
        except (OSError, ssl.SSLError) as exc:
            raise ValueError(f"ca_file: not a PEM file of CA certificates: {_reason(exc)}") from None
        if self.cert_file is not None:
            try:
                load_certificate(context, self.cert_file, self.key_file, password)
            except CertificateUnusable as exc:
                if exc.key_at_fault:
                    raise ValueError(f"key_file, key_password: {exc}") from None
                raise ValueError(f"cert_file, key_file: cannot use them as a client certificate: {exc}") from None
        return context


def _reason(exc: OSError | ssl.SSLError) -> str:
    """What went wrong, without the file's contents (``ssl.SSLError`` never quotes them; its reason is enough)."""
    if isinstance(exc, ssl.SSLError):
        return exc.reason or str(exc)
    return exc.strerror or str(exc)


async def probe_endpoint(url: str, context: ssl.SSLContext | None, timeout: float) -> Reach:
    """Connects to ``url``'s host and port as a delivery would, and sends nothing: for ``https://`` the TLS
    handshake with ``context`` (the system's CAs when ``None``), the certificate shown, and whether the server
    hangs up at once (what a server on mutual TLS does to a client whose certificate it does not take)."""
    parts = urlsplit(url)
    host = parts.hostname or ""
    tls = parts.scheme == "https"
    port = parts.port or (443 if tls else 80)
    where = f"{host}:{port}"
    try:
        async with asyncio.timeout(timeout):
            reader, writer = await asyncio.open_connection(
                host, port, ssl=(context or checking_context(None)) if tls else None
            )
    except ssl.SSLCertVerificationError as exc:
        return Reach(False, f"{where}: the server's TLS certificate failed the check: {exc.verify_message}", True)
    except ssl.SSLError as exc:
        return Reach(False, f"{where}: TLS handshake failed: {exc.reason or exc}", True)
    except TimeoutError:
        return Reach(False, f"{where}: no connection within {timeout:g} s")
    except OSError as exc:
        return Reach(False, f"{where}: cannot connect: {os.strerror(exc.errno) if exc.errno else exc}")
    try:
        if not tls:
            return Reach(True, f"reached {where} (plain HTTP)")
        connection = writer.get_extra_info("ssl_object")
        shown = _shown_certificate(connection.getpeercert() if connection is not None else None)
        version = connection.version() if connection is not None else "TLS"
        try:
            ended = await asyncio.wait_for(reader.read(1), timeout=min(timeout, HANG_UP_SECONDS))
        except TimeoutError:
            return Reach(True, f"reached {where} over {version}, {shown}")
        except (ssl.SSLError, OSError) as exc:
            reason = exc.reason if isinstance(exc, ssl.SSLError) and exc.reason else exc.strerror or str(exc)
            return Reach(False, f"{where}: the server refused docbus' client certificate ({reason}); {shown}", True)
        if not ended:
            return Reach(
                False,
                f"{where}: the server hung up right after the handshake over {version} ({shown}); a server on "
                "mutual TLS does so when it does not take docbus' client certificate (cert_file), or its absence",
                True,
            )
        return Reach(True, f"reached {where} over {version}, {shown}")
    finally:
        writer.close()
        with contextlib.suppress(Exception):
            await writer.wait_closed()


def _shown_certificate(peer: dict[str, Any] | None) -> str:
    if not peer:
        return "no certificate shown"
    subject = ", ".join(f"{k}={v}" for rdn in peer.get("subject", ()) for k, v in rdn)
    return f"certificate {subject or '(no subject)'}, valid until {peer.get('notAfter', '?')}"
