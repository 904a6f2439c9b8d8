"""Kafka connection settings: what a whole configuration is, what each client gets, and what is never shown."""

from __future__ import annotations

import datetime as dt
import ssl
from pathlib import Path

import pydantic
import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from docbus.kafka_security import KafkaSecurity
from docbus.settings import Settings


def client_certificate(folder: Path, *, key_password: bytes | None = None) -> tuple[Path, Path]:
    """A self-signed client certificate and its key (encrypted with ``key_password`` if given), as PEM files."""
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "docbus-gateway")])
    now = dt.datetime.now(dt.UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now)
        .not_valid_after(now + dt.timedelta(days=1))
        .sign(key, hashes.SHA256())
    )
    encryption = serialization.BestAvailableEncryption(key_password) if key_password else serialization.NoEncryption()
    cert_file, key_file = folder / "client.pem", folder / "client.key"
    cert_file.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_file.write_bytes(key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, encryption))
    return cert_file, key_file


def test_plain_by_default() -> None:
    security = Settings().kafka_security()
    assert security == KafkaSecurity()
    assert security.client_options() == {"security_protocol": "PLAINTEXT"}
    assert security.describe() == "PLAINTEXT"


def test_sasl_ssl_gives_every_client_the_credentials_and_one_checking_tls_context() -> None:
    security = Settings(
        kafka_security_protocol="SASL_SSL", kafka_sasl_username="docbus", kafka_sasl_password="s3cret"
    ).kafka_security()
    options = security.client_options()
    context = options.pop("ssl_context")
    assert options == {
        "security_protocol": "SASL_SSL",
        "sasl_mechanism": "SCRAM-SHA-512",
        "sasl_plain_username": "docbus",
        "sasl_plain_password": "s3cret",
    }
    assert isinstance(context, ssl.SSLContext)
    assert context.verify_mode is ssl.CERT_REQUIRED and context.check_hostname
    assert context.minimum_version >= ssl.TLSVersion.TLSv1_2
    assert security.describe() == "SASL_SSL, SCRAM-SHA-512 as docbus, system CAs"


def test_sasl_over_a_plain_connection_has_no_tls_context() -> None:
    security = KafkaSecurity(protocol="SASL_PLAINTEXT", mechanism="PLAIN", username="u", password="p")
    assert "ssl_context" not in security.client_options()
    assert security.client_options()["sasl_mechanism"] == "PLAIN"


@pytest.mark.parametrize(
    ("fields", "complaint"),
    [
        ({"kafka_security_protocol": "SASL_SSL"}, "needs a SASL user name and password"),
        ({"kafka_security_protocol": "SASL_PLAINTEXT", "kafka_sasl_username": "u"}, "needs a SASL user name"),
        ({"kafka_sasl_username": "u", "kafka_sasl_password": "hunter2"}, "but the security protocol is PLAINTEXT"),
        ({"kafka_ssl_ca_file": "/etc/ca.pem"}, "TLS files are set, but the security protocol is PLAINTEXT"),
        ({"kafka_security_protocol": "SSL", "kafka_ssl_key_file": "/k.pem"}, "a client key needs its client cert"),
        ({"kafka_security_protocol": "TLS"}, "literal_error"),
        ({"kafka_security_protocol": "SSL", "kafka_sasl_mechanism": "GSSAPI"}, "literal_error"),
    ],
)
def test_a_configuration_that_cannot_work_is_refused_at_start_up_without_echoing_it(
    fields: dict[str, str], complaint: str
) -> None:
    with pytest.raises(pydantic.ValidationError) as caught:
        Settings(**fields)  # type: ignore[arg-type]
    shown = str(caught.value) + repr(caught.value.errors())
    assert complaint in shown
    assert "hunter2" not in str(caught.value)


def test_an_empty_variable_counts_as_unset(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("DOCBUS_KAFKA_SSL_CA_FILE", "")
    monkeypatch.setenv("DOCBUS_KAFKA_SASL_PASSWORD", "")
    assert Settings().kafka_security() == KafkaSecurity()


def test_the_password_is_never_shown() -> None:
    settings = Settings(kafka_security_protocol="SASL_SSL", kafka_sasl_username="u", kafka_sasl_password="hunter2")
    assert "hunter2" not in repr(settings) + str(settings.model_dump())
    assert "hunter2" not in settings.kafka_security().describe()


def test_a_client_certificate_and_an_encrypted_key_are_loaded(tmp_path: Path) -> None:
    cert_file, key_file = client_certificate(tmp_path, key_password=b"key-pass")
    settings = Settings(
        kafka_security_protocol="SSL",
        kafka_ssl_cert_file=cert_file,
        kafka_ssl_key_file=key_file,
        kafka_ssl_key_password="key-pass",
    )
    assert isinstance(settings.kafka_security().client_options()["ssl_context"], ssl.SSLContext)
    assert settings.kafka_security().describe() == "SSL, system CAs, client certificate"
    wrong = KafkaSecurity(protocol="SSL", cert_file=cert_file, key_file=key_file, key_password="wrong")
    with pytest.raises(ValueError, match="cannot use the Kafka TLS files"):
        wrong.client_options()


def test_files_that_cannot_be_read_are_named_as_such(tmp_path: Path) -> None:
    security = KafkaSecurity(protocol="SSL", ca_file=tmp_path / "missing-ca.pem")
    with pytest.raises(ValueError, match="cannot use the Kafka TLS files"):
        security.client_options()
    not_a_cert = tmp_path / "ca.pem"
    not_a_cert.write_text("hello")
    with pytest.raises(ValueError, match="cannot use the Kafka TLS files"):
        KafkaSecurity(protocol="SSL", ca_file=not_a_cert).client_options()
