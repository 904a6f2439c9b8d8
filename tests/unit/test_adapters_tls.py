"""The TLS settings every HTTP adapter takes (``docbus.adapters.tls``): what each combination builds, every
combination that cannot work refused when the settings are read, and the key's password never shown."""

from __future__ import annotations

import ssl
import subprocess
import sys
import textwrap
from pathlib import Path
from typing import Any

import pytest

from docbus.adapters.base import AdapterSettings
from docbus.adapters.national_axis import NationalAxisAdapter
from docbus.adapters.registry import AdapterConfigError, build_adapter
from docbus.adapters.tls import TlsClientSettings
from docbus.connectors.transport import AiohttpTransport

from ..pki import Pki

PASSWORD = "k3y-passw0rd-value"
AXIS = {"url": "https://axis.example.gov.vn/vxp", "system_id": "docbus", "secret": "docbus-secret"}
ADAPTERS = {
    "national_axis": AXIS,
    "provincial_axis": AXIS,
    "webhook": {"url": "https://hook.example.gov.vn/in", "secret": "a-webhook-secret-of-16"},
}


@pytest.fixture(scope="module")
def pki(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    authority = Pki(tmp_path_factory.mktemp("pki"))
    cert, key = authority.client("docbus", "docbus.example.gov.vn")
    locked_cert, locked_key = authority.client("locked", "docbus.example.gov.vn", password=PASSWORD)
    _, other_key = authority.client("other", "someone else")
    garbage = authority.folder / "garbage.pem"
    garbage.write_text("-----BEGIN CERTIFICATE-----\nnot base64 at all\n-----END CERTIFICATE-----\n")
    return {
        "ca": authority.ca_file,
        "cert": cert,
        "key": key,
        "locked_cert": locked_cert,
        "locked_key": locked_key,
        "other_key": other_key,
        "garbage": garbage,
    }


def trusted(context: ssl.SSLContext) -> list[dict[str, str]]:
    """The subjects of the CAs ``context`` trusts."""
    return [dict(item[0] for item in ca["subject"]) for ca in context.get_ca_certs()]


def settings(**values: Any) -> TlsClientSettings:
    return TlsClientSettings.model_validate({"url": "https://axis.example.gov.vn", **values})


def test_no_tls_setting_leaves_the_systems_cas() -> None:
    assert settings().ssl_context() is None
    assert TlsClientSettings.model_validate({"url": "http://127.0.0.1:9101"}).ssl_context() is None


def test_a_ca_file_checks_the_server_against_it_and_its_host_name(pki: dict[str, Path]) -> None:
    context = settings(ca_file=pki["ca"]).ssl_context()
    assert context is not None
    assert context.verify_mode is ssl.CERT_REQUIRED and context.check_hostname
    assert context.minimum_version >= ssl.TLSVersion.TLSv1_2
    assert trusted(context) == [{"commonName": "Test provincial CA"}]  # that CA only, not the system's


def test_a_client_certificate_with_an_encrypted_key(pki: dict[str, Path]) -> None:
    plain = settings(ca_file=pki["ca"], cert_file=pki["cert"], key_file=pki["key"])
    assert plain.ssl_context() is not None
    locked = settings(cert_file=pki["locked_cert"], key_file=pki["locked_key"], key_password=PASSWORD)
    assert locked.ssl_context() is not None
    for shown in (repr(locked), str(locked), locked.model_dump_json()):
        assert PASSWORD not in shown


@pytest.mark.parametrize(
    ("values", "expected"),
    [
        ({"url": "http://127.0.0.1:9101", "ca_file": "ca"}, "ca_file need an https:// url"),
        ({"key_file": "key"}, "set cert_file too"),
        ({"key_password": PASSWORD}, "set cert_file too"),
        ({"cert_file": "cert"}, "cert_file needs key_file"),
        ({"ca_file": "missing"}, "ca_file: no such file"),
        ({"ca_file": "garbage"}, "ca_file: not a PEM file of CA certificates"),
        ({"cert_file": "cert", "key_file": "missing"}, "key_file: no such file"),
        ({"cert_file": "cert", "key_file": "other_key"}, "the key is not the certificate's key"),
        ({"cert_file": "locked_cert", "key_file": "locked_key"}, "the key is encrypted and no password is set"),
        (
            {"cert_file": "locked_cert", "key_file": "locked_key", "key_password": "wrong-" + PASSWORD},
            "the password does not open the key",
        ),
        ({"cert_file": "cert", "key_file": "garbage"}, "the key is not a PEM private key"),
    ],
)
def test_settings_that_cannot_work_are_refused_when_read(
    pki: dict[str, Path], tmp_path: Path, values: dict[str, str], expected: str
) -> None:
    files = {**pki, "missing": tmp_path / "missing.pem"}
    given = {
        name: value if name in ("url", "key_password") else str(files.get(value, value))
        for name, value in values.items()
    }
    with pytest.raises(ValueError, match=expected) as caught:
        TlsClientSettings.model_validate({"url": "https://axis.example.gov.vn", **given})
    assert PASSWORD not in str(caught.value)


@pytest.mark.parametrize("name", sorted(ADAPTERS))
def test_every_http_adapter_takes_them_and_names_the_setting_at_fault(name: str, pki: dict[str, Path]) -> None:
    good = {**ADAPTERS[name], "ca_file": str(pki["ca"]), "cert_file": str(pki["cert"]), "key_file": str(pki["key"])}
    adapter = build_adapter(name, good)
    assert isinstance(adapter.settings, TlsClientSettings)
    with pytest.raises(AdapterConfigError) as caught:
        build_adapter(name, {**good, "key_file": str(pki["other_key"]), "key_password": PASSWORD})
    assert str(caught.value) == (
        f"adapter {name!r}: cert_file, key_file: cannot use them as a client certificate: "
        "the key is not the certificate's key"
    )
    assert PASSWORD not in str(caught.value)


def test_the_axis_client_connects_with_the_settings_context(pki: dict[str, Path]) -> None:
    config = {**AXIS, "ca_file": str(pki["ca"]), "cert_file": str(pki["cert"]), "key_file": str(pki["key"])}
    adapter = build_adapter("national_axis", config)
    assert isinstance(adapter, NationalAxisAdapter)
    transport = adapter.client._direct
    assert isinstance(transport, AiohttpTransport)
    context = transport._ssl
    assert isinstance(context, ssl.SSLContext)
    assert trusted(context) == [{"commonName": "Test provincial CA"}]


def test_the_file_adapter_has_no_tls_settings() -> None:
    with pytest.raises(AdapterConfigError, match="unknown setting 'ca_file'"):
        build_adapter("file", {"directory": "/tmp/drop", "ca_file": "ca.pem"})
    assert not issubclass(type(build_adapter("file", {"directory": "/tmp/drop"}).settings), TlsClientSettings)
    assert issubclass(TlsClientSettings, AdapterSettings)


def test_an_encrypted_key_without_its_password_never_waits_for_a_terminal(pki: dict[str, Path]) -> None:
    """OpenSSL asks for a missing password on the terminal; a service must fail at once instead, every time a key
    is loaded: the adapters', Kafka's and the gateway's own."""
    script = textwrap.dedent(
        f"""
        from pathlib import Path
        from docbus.adapters.tls import TlsClientSettings
        from docbus.gateway_tls import GatewayTls, certificate_report
        from docbus.kafka_security import KafkaSecurity
        cert, key = Path({str(pki["locked_cert"])!r}), Path({str(pki["locked_key"])!r})
        for attempt in (
            lambda: TlsClientSettings(url="https://axis.example.gov.vn", cert_file=cert, key_file=key),
            lambda: certificate_report(GatewayTls(cert, key)),
            lambda: KafkaSecurity(protocol="SSL", cert_file=cert, key_file=key).client_options(),
        ):
            try:
                attempt()
            except ValueError as exc:
                print("refused:", " ".join(str(exc).split()))
        """
    )
    # A terminal would be the worst case; a pipe that never closes stands in for one that nobody types into.
    proc = subprocess.Popen(
        [sys.executable, "-c", script], stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
    )
    try:
        out, err = proc.communicate(timeout=30)
    finally:
        proc.kill()
    assert "pass phrase" not in err, err
    lines = out.splitlines()
    assert len(lines) == 3, (out, err)
    assert all("the key is encrypted and no password is set" in line for line in lines), lines
