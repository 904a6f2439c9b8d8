"""HTTPS for the gateway: its certificate and key, checked before the server starts and reported by the check.

Agencies present their API keys in every request, so between machines the gateway is reached over TLS: either a
proxy in front terminates it, or the gateway does, with ``DOCBUS_TLS_CERT_FILE`` (the certificate chain, PEM) and
``DOCBUS_TLS_KEY_FILE`` (its key, ``DOCBUS_TLS_KEY_PASSWORD`` if encrypted). :func:`certificate_report` loads
them as the server will, so a key that does not match its certificate, a file that cannot be read or a
certificate that has expired is found by ``docbus config check`` and stops ``docbus serve`` with one line, not a
traceback from inside the server, and one about to expire is a warning. A running gateway takes renewed files
without a restart (:class:`ServingCertificate`).
"""

from __future__ import annotations

import datetime as dt
import logging
import ssl
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from docbus.tls_client import CertificateUnusable, load_certificate

log = logging.getLogger(__name__)

SOON = dt.timedelta(days=30)


@dataclass(frozen=True, slots=True)
class GatewayTls:
    """The gateway's certificate chain and key; with ``client_ca_file``, mutual TLS: a client must show a
    certificate that CA signed before any request reaches docbus (API keys still authenticate each agency)."""

    cert_file: Path
    key_file: Path
    key_password: str | None = None
    client_ca_file: Path | None = None


@dataclass(frozen=True, slots=True)
class CertificateReport:
    subject: str
    not_after: dt.datetime
    problem: str | None  # why it cannot serve, if it cannot
    warning: str | None  # why an operator should look soon

    mutual: bool = False  # clients must show a certificate of the client CA

    def summary(self) -> str:
        clients = "; clients must show a certificate of the client CA (mutual TLS)" if self.mutual else ""
        return f"{self.subject}, valid until {self.not_after:%Y-%m-%d}{clients}"


def certificate_report(tls: GatewayTls, *, now: dt.datetime | None = None) -> CertificateReport:
    """Loads the certificate chain and key as the server will; ``OSError``/``ValueError`` with the reason when
    they cannot be used at all."""
    return serving_context(tls, now=now)[1]


def serving_context(tls: GatewayTls, *, now: dt.datetime | None = None) -> tuple[ssl.SSLContext, CertificateReport]:
    """The server context the gateway serves with (TLS 1.2 at least) and the report on its certificate;
    ``OSError``/``ValueError`` with the reason when the files cannot be used at all."""
    from cryptography import x509  # here: every command reads the settings, which name GatewayTls

    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    try:
        load_certificate(context, tls.cert_file, tls.key_file, tls.key_password)
    except CertificateUnusable as exc:
        if exc.key_at_fault:
            raise ValueError(f"{exc} (DOCBUS_TLS_KEY_PASSWORD)") from exc
        raise ValueError(f"the certificate and key cannot serve TLS: {exc}") from exc
    if tls.client_ca_file is not None:
        try:
            context.load_verify_locations(cafile=str(tls.client_ca_file))
        except (OSError, ssl.SSLError) as exc:
            reason = exc.reason if isinstance(exc, ssl.SSLError) and exc.reason else exc.strerror or exc
            raise ValueError(f"the client CA file cannot be used: {reason} (DOCBUS_TLS_CLIENT_CA_FILE)") from exc
        context.verify_mode = ssl.CERT_REQUIRED
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
    return context, CertificateReport(subject, not_after, problem, warning, mutual=tls.client_ca_file is not None)


class ServingCertificate:
    """The gateway's TLS context, which takes a renewed certificate without a restart.

    Certificates are renewed every few months (an ACME client, the province's CA): the files are replaced and the
    gateway must serve the new ones without dropping its connections. The context uvicorn listens with (``front``)
    keeps the certificate loaded at start and has a callback that runs at the start of every handshake: at most
    every ``check_seconds`` it looks at the two files, and the client CA file on mutual TLS (size, modification
    time, inode), and, if they changed, loads them into a new context; every handshake then continues on the
    newest one (OpenSSL verifies a client's certificate against the CAs of the context the handshake ends on, so
    a client CA file that gained or lost a CA counts from then on too). New files that cannot serve (a key
    that is not the certificate's, as between the writes of the two files; a certificate out of date; an
    unreadable file) are not taken: the gateway goes on with what it has and logs a warning, once per state of
    the files. Established connections keep the certificate they were opened with.
    """

    def __init__(self, tls: GatewayTls, *, check_seconds: float, clock: Callable[[], float] = time.monotonic) -> None:
        self._tls = tls
        self._check_seconds = check_seconds
        self._clock = clock
        self._seen = _files_state(tls)
        context, report = serving_context(tls)
        if report.problem:
            raise ValueError(report.problem)
        self.front = context
        self._current = context
        self._next_check = clock() + check_seconds
        self.report = report
        _record_expiry(report)
        if check_seconds > 0:
            context.sni_callback = self._on_hello

    def _on_hello(self, connection: ssl.SSLObject, server_name: str | None, context: ssl.SSLContext) -> None:
        if self._clock() >= self._next_check:
            self._next_check = self._clock() + self._check_seconds
            self.refresh()
        if self._current is not context:
            connection.context = self._current

    def refresh(self) -> bool:
        """Loads the files again if they changed since they were last looked at; whether a new certificate was
        taken. Never raises: a handshake must not fail because a renewal is half-written."""
        state = _files_state(self._tls)
        if state == self._seen:
            return False
        self._seen = state
        try:
            context, report = serving_context(self._tls)
        except Exception as exc:  # whatever the files hold, the handshake under way goes on with what is served
            self._keep(str(exc) or type(exc).__name__)
            return False
        if report.problem:
            self._keep(report.problem)
            return False
        self._current, self.report = context, report
        _record_expiry(report)
        log.info("HTTPS: took the replaced files; now serving the certificate %s", report.summary())
        return True

    def _keep(self, problem: str) -> None:
        held = self.report.summary()
        log.warning("HTTPS: the replaced certificate files cannot serve (%s); still serving %s", problem, held)


@dataclass(frozen=True, slots=True)
class ServingCertificateFactory:
    """uvicorn's ``ssl_context_factory``: called in each gateway process (it is pickled to them), which gets its
    own :class:`ServingCertificate`."""

    tls: GatewayTls
    check_seconds: float

    def __call__(self, config: object, default: Callable[[], ssl.SSLContext]) -> ssl.SSLContext:
        return ServingCertificate(self.tls, check_seconds=self.check_seconds).front


def _record_expiry(report: CertificateReport) -> None:
    from docbus.metrics import CERTIFICATE_NOT_AFTER  # here: every command reads the settings, not only servers

    CERTIFICATE_NOT_AFTER.set(report.not_after.timestamp())


def _files_state(tls: GatewayTls) -> tuple[tuple[int, int, int], ...]:
    """What tells a replaced file from the one loaded (a missing file has a state of its own)."""
    states = []
    for path in (tls.cert_file, tls.key_file, *([tls.client_ca_file] if tls.client_ca_file else [])):
        try:
            info = path.stat()
        except OSError:
            states.append((-1, -1, -1))
            continue
        states.append((info.st_ino, info.st_size, info.st_mtime_ns))
    return tuple(states)
