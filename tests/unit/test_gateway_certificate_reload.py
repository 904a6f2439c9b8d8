"""The gateway's serving certificate (``docbus.gateway_tls.ServingCertificate``): replaced files are looked at no
more often than asked, taken when they can serve, and otherwise left with one warning per state of the files."""

from __future__ import annotations

import logging
import shutil
import ssl
from pathlib import Path

import pytest

from docbus.gateway_tls import GatewayTls, ServingCertificate

from ..pki import Pki


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


class Hello:
    """Stands in for the ``ssl.SSLObject`` of a handshake: the callback may give it another context."""

    def __init__(self, context: ssl.SSLContext) -> None:
        self.context = context


@pytest.fixture
def files(tmp_path: Path) -> tuple[Pki, GatewayTls]:
    pki = Pki(tmp_path / "pki")
    cert, key = pki.server("first")
    tls = GatewayTls(tmp_path / "cert.pem", tmp_path / "key.pem")
    shutil.copy(cert, tls.cert_file)
    shutil.copy(key, tls.key_file)
    return pki, tls


def replace(tls: GatewayTls, cert: Path, key: Path) -> None:
    shutil.copy(cert, tls.cert_file)
    shutil.copy(key, tls.key_file)


def test_files_are_looked_at_only_once_per_interval(files: tuple[Pki, GatewayTls]) -> None:
    pki, tls = files
    clock = Clock()
    serving = ServingCertificate(tls, check_seconds=60, clock=clock)
    first = serving.report
    replace(tls, *pki.server("renewed", valid_days=700))
    hello = Hello(serving.front)
    serving.front.sni_callback(hello, None, serving.front)  # type: ignore[misc]
    assert hello.context is serving.front and serving.report == first  # not yet: the interval has not passed
    clock.now += 61
    serving.front.sni_callback(hello, None, serving.front)  # type: ignore[misc]
    assert hello.context is not serving.front and serving.report.not_after > first.not_after
    later = Hello(serving.front)
    serving.front.sni_callback(later, None, serving.front)  # type: ignore[misc]
    assert later.context is hello.context  # every handshake continues on the newest context


def test_files_that_cannot_serve_are_not_taken_and_warned_about_once(
    files: tuple[Pki, GatewayTls], caplog: pytest.LogCaptureFixture
) -> None:
    pki, tls = files
    serving = ServingCertificate(tls, check_seconds=1, clock=Clock())
    held = serving.report
    renewed_cert, renewed_key = pki.server("renewed", valid_days=700)
    shutil.copy(renewed_cert, tls.cert_file)  # half a renewal: the new certificate, the old key
    with caplog.at_level(logging.WARNING, logger="docbus.gateway_tls"):
        assert serving.refresh() is False
        assert serving.refresh() is False  # the same files: nothing looked at again, nothing logged again
    assert serving.report == held
    assert [r.getMessage() for r in caplog.records] == [
        "HTTPS: the replaced certificate files cannot serve (the certificate and key cannot serve TLS: "
        f"the key is not the certificate's key); still serving {held.summary()}"
    ]
    shutil.copy(renewed_key, tls.key_file)
    assert serving.refresh() is True and serving.report.not_after > held.not_after

    caplog.clear()
    replace(tls, *pki.server("expired", expired=True))
    with caplog.at_level(logging.WARNING, logger="docbus.gateway_tls"):
        assert serving.refresh() is False
    assert "cannot serve (the certificate expired on" in caplog.text
    tls.key_file.unlink()
    with caplog.at_level(logging.WARNING, logger="docbus.gateway_tls"):
        assert serving.refresh() is False
    assert "No such file" in caplog.text or "cannot serve" in caplog.text


def test_no_interval_means_no_reloading(files: tuple[Pki, GatewayTls]) -> None:
    _, tls = files
    serving = ServingCertificate(tls, check_seconds=0)
    assert serving.front.sni_callback is None
    assert serving.front.minimum_version >= ssl.TLSVersion.TLSv1_2
