"""A client certificate forwarded by a TLS-terminating proxy: read in every form common proxies write it, believed
only from a trusted proxy's address, and never mistaken for one when the header cannot be read."""

from __future__ import annotations

import base64
import ipaddress
import logging
import ssl
from pathlib import Path
from typing import Any
from urllib.parse import quote

import pytest

from docbus.gateway.forwarded_certificates import ClientCertificates, forwarded_certificate_sha256, parse_networks
from docbus.gateway.tls_peer import certificate_fingerprint

from ..pki import Pki


@pytest.fixture
def certificate(tmp_path: Path) -> tuple[str, str]:
    """A client certificate (PEM) and its SHA-256 fingerprint."""
    cert_file, _ = Pki(tmp_path).client("g22", "000.00.00.G22")
    return cert_file.read_text(), certificate_fingerprint(cert_file)[0]


def test_every_common_way_of_writing_the_certificate_gives_its_fingerprint(certificate: tuple[str, str]) -> None:
    pem, fingerprint = certificate
    der_b64 = base64.b64encode(ssl.PEM_cert_to_DER_cert(pem)).decode()
    written = {
        "nginx $ssl_client_escaped_cert": quote(pem, safe=""),
        "plain PEM": pem,
        "nginx $ssl_client_cert (tab-indented lines)": pem.strip().replace("\n", "\n\t"),
        "HAProxy ssl_c_der,base64": der_b64,
        "Traefik (URL-escaped base64)": quote(der_b64, safe=""),
        "Envoy XFCC Hash": f'By=spiffe://gateway;Hash={fingerprint.upper()};Subject="CN=000.00.00.G22,O=UBND"',
        "Envoy XFCC Cert": f'Cert="{quote(pem, safe="")}";Subject="CN=x"',
        "Envoy XFCC, the nearest proxy's element last": f"By=a;Hash={'0' * 64},By=b;Hash={fingerprint}",
        "hex fingerprint": fingerprint,
        "hex fingerprint with colons": ":".join(fingerprint[i : i + 2] for i in range(0, 64, 2)).upper(),
    }
    for form, value in written.items():
        assert forwarded_certificate_sha256(value) == fingerprint, form


def test_no_certificate_and_unreadable_ones() -> None:
    assert forwarded_certificate_sha256("") is None
    assert forwarded_certificate_sha256("   ") is None
    assert forwarded_certificate_sha256('By=spiffe://gateway;Subject="CN=x"') is None  # XFCC naming none
    for unreadable in (
        "(null)",
        "-----BEGIN CERTIFICATE-----\nnot base64!\n-----END CERTIFICATE-----",
        base64.b64encode(b"\x30\x03\x02\x01\x00").decode(),  # base64, but of no certificate
        "Hash=abc123",
        "a" * 63,
    ):
        with pytest.raises(ValueError, match=r"certificate|fingerprint|base64"):
            forwarded_certificate_sha256(unreadable)


def scope(peer: str, headers: list[tuple[bytes, bytes]], own_pem: str | None = None) -> dict[str, Any]:
    tls = {"tls": {"client_cert_chain": [own_pem]}} if own_pem else {}
    return {"type": "http", "client": (peer, 50000), "headers": headers, "extensions": tls}


def test_the_header_is_believed_only_from_a_trusted_proxy(
    tmp_path: Path, certificate: tuple[str, str], caplog: pytest.LogCaptureFixture
) -> None:
    pem, fingerprint = certificate
    proxy_cert, _ = Pki(tmp_path / "proxy").client("proxy", "proxy.example.gov.vn")
    proxy_pem = proxy_cert.read_text()
    proxy_fingerprint = certificate_fingerprint(proxy_cert)[0]
    forwarded = [(b"x-client-cert", quote(pem, safe="").encode())]
    certificates = ClientCertificates(parse_networks("10.0.0.0/24, 127.0.0.2"), "X-Client-Cert")

    assert certificates.sha256(scope("10.0.0.7", forwarded)) == fingerprint
    assert certificates.sha256(scope("127.0.0.2", forwarded)) == fingerprint
    assert certificates.sha256(scope("::ffff:10.0.0.7", forwarded)) == fingerprint  # a dual-stack listener
    # From a trusted proxy the header alone counts: the proxy's own connection shows the proxy's certificate.
    assert certificates.sha256(scope("10.0.0.7", forwarded, proxy_pem)) == fingerprint
    assert certificates.sha256(scope("10.0.0.7", [], proxy_pem)) is None
    # From anyone else the header is ignored: their own connection decides.
    assert certificates.sha256(scope("10.0.1.7", forwarded)) is None
    assert certificates.sha256(scope("127.0.0.1", forwarded, proxy_pem)) == proxy_fingerprint
    assert certificates.sha256({"type": "http", "client": None, "headers": forwarded}) is None
    # No proxies trusted: the header means nothing, whoever sends it.
    assert ClientCertificates().sha256(scope("10.0.0.7", forwarded)) is None

    with caplog.at_level(logging.WARNING, logger="docbus.gateway.forwarded_certificates"):
        assert certificates.sha256(scope("10.0.0.7", [(b"x-client-cert", b"(null)")])) is None
        assert certificates.sha256(scope("10.0.0.7", forwarded + forwarded)) is None  # which one? neither
    assert "the proxy at 10.0.0.7 forwarded a X-Client-Cert header docbus cannot read" in caplog.text
    assert "sent 2 X-Client-Cert headers; none is believed" in caplog.text


def test_trusted_proxies_are_addresses_or_networks() -> None:
    assert parse_networks("") == ()
    assert parse_networks("10.0.0.5, 192.168.0.0/16 ::1") == (
        ipaddress.ip_network("10.0.0.5/32"),
        ipaddress.ip_network("192.168.0.0/16"),
        ipaddress.ip_network("::1/128"),
    )
    with pytest.raises(ValueError, match=r"'proxy\.local' is not an IP address or network"):
        parse_networks("10.0.0.5,proxy.local")


def test_the_settings_name_a_bad_proxy_address(monkeypatch: pytest.MonkeyPatch) -> None:
    from pydantic import ValidationError

    from docbus.settings import Settings

    monkeypatch.setenv("DOCBUS_TRUSTED_PROXIES", "10.0.0.5, 10.0.0.0/33")
    with pytest.raises(ValidationError, match=r"trusted_proxies\n.*'10\.0\.0\.0/33' is not an IP address or network"):
        Settings()
    monkeypatch.setenv("DOCBUS_TRUSTED_PROXIES", "10.0.0.5, 10.0.1.0/24")
    monkeypatch.setenv("DOCBUS_PROXY_CLIENT_CERT_HEADER", "X-Forwarded-Client-Cert")
    certificates = Settings().client_certificates()
    assert certificates.trusted_proxies == parse_networks("10.0.0.5/32 10.0.1.0/24")
    assert certificates.header == b"x-forwarded-client-cert"
    monkeypatch.setenv("DOCBUS_PROXY_CLIENT_CERT_HEADER", "X-Client-Cert: evil")
    with pytest.raises(ValidationError, match="proxy_client_cert_header"):
        Settings()


def test_the_config_check_names_the_trusted_proxies_and_warns_of_wide_ones(monkeypatch: pytest.MonkeyPatch) -> None:
    from docbus.preflight import _trusted_proxies
    from docbus.settings import Settings

    monkeypatch.delenv("DOCBUS_TRUSTED_PROXIES", raising=False)
    none = _trusted_proxies(Settings())
    assert (none.verdict, none.detail) == (
        "ok",
        "none trusted: client certificates come only from the gateway's own TLS",
    )
    monkeypatch.setenv("DOCBUS_TRUSTED_PROXIES", "127.0.0.1, 10.20.0.0/24")
    narrow = _trusted_proxies(Settings())
    assert narrow.verdict == "ok"
    assert narrow.detail == "client certificates forwarded in X-Client-Cert believed from 127.0.0.1/32, 10.20.0.0/24"
    for wide in ("10.0.0.0/8", "0.0.0.0/0", "203.0.113.7, 8.8.8.8"):
        monkeypatch.setenv("DOCBUS_TRUSTED_PROXIES", wide)
        finding = _trusted_proxies(Settings())
        assert finding.verdict == "warn" and "whoever connects from there can claim any certificate" in finding.detail
