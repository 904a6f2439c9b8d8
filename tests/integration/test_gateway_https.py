"""The gateway over HTTPS: ``docbus serve`` with its own certificate (from a CA made here, as a province's own CA
would sign it), ``docbus send --ca-file`` to it, and what happens when the certificate cannot be trusted or used."""

from __future__ import annotations

import datetime as dt
import os
import shutil
import signal
import socket
import ssl
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import httpx
import orjson
import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes

from docbus.gateway_tls import GatewayTls, certificate_report

from ..conftest import SAMPLES, free_port
from ..pki import Pki, make_pki
from .helpers import config_check_finding

DOC = SAMPLES / "edoc_with_attachment_dc0bdef0.edxml"
SENDER = "000.00.00.G22"


def docbus(env: dict[str, str], *args: str, timeout: float = 60) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "docbus.cli", *args], env=env, capture_output=True, text=True, timeout=timeout
    )


@pytest.fixture
def env(tmp_path: Path) -> dict[str, str]:
    values = {k: v for k, v in os.environ.items() if not k.startswith("DOCBUS_")}
    return {**values, "DOCBUS_DATA_DIR": str(tmp_path / "data")}


def https_finding(env: dict[str, str]) -> dict[str, str]:
    tls = {k: v for k, v in env.items() if k.startswith("DOCBUS_TLS_")}
    return config_check_finding("https", tls, Path(env["DOCBUS_DATA_DIR"]))


def serve_https(
    env: dict[str, str], tmp_path: Path, trusted: ssl.SSLContext, *args: str
) -> tuple[subprocess.Popen[bytes], int]:
    """``docbus serve`` (with ``args``) on a free port, logging to ``tmp_path/gateway.log``, once it answers a
    client that ``trusted`` (its CA, and a client certificate if it wants one) lets in; (the process, its port)."""
    port = free_port()
    with (tmp_path / "gateway.log").open("ab") as log:
        proc = subprocess.Popen(
            [sys.executable, "-m", "docbus.cli", "serve", "--port", str(port), *args],
            env=env,
            stdout=log,
            stderr=subprocess.STDOUT,
        )
    for _ in range(300):
        assert proc.poll() is None, "the gateway exited during start-up"
        try:
            if httpx.get(f"https://127.0.0.1:{port}/healthz", verify=trusted, timeout=2).status_code == 200:
                return proc, port
        except httpx.TransportError:
            time.sleep(0.05)
    proc.kill()
    raise AssertionError("the gateway did not answer over HTTPS")


def test_agencies_send_over_https_to_a_gateway_with_a_certificate_of_the_provinces_ca(
    env: dict[str, str], tmp_path: Path
) -> None:
    ca_file, cert_file, key_file = make_pki(tmp_path / "pki")
    env |= {"DOCBUS_TLS_CERT_FILE": str(cert_file), "DOCBUS_TLS_KEY_FILE": str(key_file)}
    key = docbus(env, "agency", "add", SENDER, "--name", "VPCP").stdout.strip().splitlines()[-1]
    finding = https_finding(env)
    assert finding["verdict"] == "ok" and "CN=docbus.example.gov.vn, valid until" in finding["detail"], finding
    proc, port = serve_https(env, tmp_path, ssl.create_default_context(cafile=str(ca_file)), "--log-level", "warning")
    url = f"https://127.0.0.1:{port}"
    try:
        sent = docbus(env, "send", str(DOC), "--key", key, "--url", url, "--ca-file", str(ca_file))
        assert sent.returncode == 0, sent.stderr
        assert orjson.loads(sent.stdout)["sender"] == SENDER

        started = time.monotonic()
        untrusted = docbus(env, "send", str(DOC), "--key", key, "--url", url)
        assert untrusted.returncode == 1
        assert "TLS certificate that is not trusted" in untrusted.stderr and "--ca-file" in untrusted.stderr
        assert time.monotonic() - started < 20  # refused at once, not retried like a broken connection

        with pytest.raises(httpx.TransportError):  # plain HTTP gets no answer from the TLS port
            httpx.get(f"http://127.0.0.1:{port}/healthz", timeout=5)
        missing_ca = docbus(env, "send", str(DOC), "--key", key, "--url", url, "--ca-file", str(tmp_path / "no.pem"))
        assert missing_ca.returncode == 2 and "cannot use the TLS files" in missing_ca.stderr
    finally:
        proc.send_signal(signal.SIGTERM)
        proc.wait(timeout=30)


def test_a_certificate_that_cannot_serve_stops_the_gateway_before_it_starts(
    env: dict[str, str], tmp_path: Path
) -> None:
    _, expired_cert, expired_key = make_pki(tmp_path / "expired", expired=True)
    _, other_cert, _ = make_pki(tmp_path / "other")
    cases = {
        "expired": ({"DOCBUS_TLS_CERT_FILE": str(expired_cert), "DOCBUS_TLS_KEY_FILE": str(expired_key)}, "expired"),
        "another key": (
            {"DOCBUS_TLS_CERT_FILE": str(other_cert), "DOCBUS_TLS_KEY_FILE": str(expired_key)},
            "cannot serve TLS",
        ),
        "missing": (
            {"DOCBUS_TLS_CERT_FILE": str(tmp_path / "none.pem"), "DOCBUS_TLS_KEY_FILE": str(expired_key)},
            "No such file",
        ),
    }
    for name, (tls, complaint) in cases.items():
        served = docbus({**env, **tls}, "serve", "--port", str(free_port()), timeout=60)
        assert served.returncode == 2, (name, served.stderr)
        assert complaint in served.stderr and "Traceback" not in served.stderr, (name, served.stderr)
        finding = https_finding({**env, **tls})
        assert finding["verdict"] == "fail" and complaint in finding["detail"], (name, finding)
    half = docbus({**env, "DOCBUS_TLS_CERT_FILE": str(other_cert)}, "serve", "--port", str(free_port()))
    assert half.returncode == 2 and "tls_cert_file and tls_key_file go together" in half.stderr
    plain = https_finding(env)
    assert plain["verdict"] == "ok" and "plain HTTP" in plain["detail"]


def test_a_certificate_about_to_expire_is_a_warning(tmp_path: Path) -> None:
    _, cert_file, key_file = make_pki(tmp_path / "soon", valid_days=10)
    report = certificate_report(GatewayTls(cert_file, key_file))
    assert report.problem is None
    assert report.warning is not None and "in 9 days" in report.warning
    later = certificate_report(GatewayTls(cert_file, key_file), now=dt.datetime.now(dt.UTC) - dt.timedelta(days=90))
    assert later.problem is not None and later.problem.startswith("the certificate is valid only from ")


def served_certificate(port: int, ca_file: Path) -> dict[str, Any]:
    """The certificate a new TLS connection to the gateway is shown (checked against ``ca_file``)."""
    context = ssl.create_default_context(cafile=str(ca_file))
    with (
        socket.create_connection(("127.0.0.1", port), timeout=5) as raw,
        context.wrap_socket(raw, server_hostname="127.0.0.1") as tls,
    ):
        certificate = tls.getpeercert()
    assert certificate is not None
    return dict(certificate)


def test_a_renewed_certificate_is_served_without_a_restart(env: dict[str, str], tmp_path: Path) -> None:
    """Both gateway processes take renewed files within the check interval; files that cannot serve (a key that
    is not the certificate's, as between the writes of a renewal; an expired certificate) are not taken."""
    pki = Pki(tmp_path / "pki")
    first_cert, first_key = pki.server("first")
    cert_file, key_file = tmp_path / "gateway-cert.pem", tmp_path / "gateway-key.pem"
    shutil.copy(first_cert, cert_file)
    shutil.copy(first_key, key_file)
    env |= {
        "DOCBUS_TLS_CERT_FILE": str(cert_file),
        "DOCBUS_TLS_KEY_FILE": str(key_file),
        "DOCBUS_TLS_RELOAD_CHECK_SECONDS": "0.3",
    }
    trusted = ssl.create_default_context(cafile=str(pki.ca_file))
    proc, port = serve_https(env, tmp_path, trusted, "--workers", "2")

    def serial_of(path: Path) -> int:
        return int(x509.load_pem_x509_certificate(path.read_bytes()).serial_number)

    def settles_on(expected: int) -> None:
        """Waits until ten new connections in a row are shown ``expected`` (connections reach either process)."""
        deadline, streak, shown = time.monotonic() + 30, 0, None
        while streak < 10:
            assert time.monotonic() < deadline, f"still shown {shown}, not {expected}"
            shown = int(served_certificate(port, pki.ca_file)["serialNumber"], 16)  # hex, maybe with a leading 0
            streak = streak + 1 if shown == expected else 0
            time.sleep(0.05)

    def expiry_metric() -> float:
        text = httpx.get(f"https://127.0.0.1:{port}/metrics", verify=trusted, timeout=5).text
        line = next(x for x in text.splitlines() if x.startswith("docbus_gateway_certificate_expiry_timestamp_seconds"))
        return float(line.split()[-1])

    try:
        settles_on(serial_of(first_cert))
        with httpx.Client(base_url=f"https://127.0.0.1:{port}", verify=trusted) as kept:
            assert kept.get("/healthz").status_code == 200  # a connection opened before the renewal

            renewed_cert, renewed_key = pki.server("renewed", valid_days=700)
            shutil.copy(renewed_cert, cert_file)  # the certificate first: for a moment it is not the key's
            time.sleep(1)
            settles_on(serial_of(first_cert))
            shutil.copy(renewed_key, key_file)
            settles_on(serial_of(renewed_cert))
            assert kept.get("/healthz").status_code == 200  # still open, on the certificate it began with

        renewed_until = x509.load_pem_x509_certificate(renewed_cert.read_bytes()).not_valid_after_utc.timestamp()
        deadline = time.monotonic() + 10
        while expiry_metric() != pytest.approx(renewed_until):  # the earliest of both processes
            assert time.monotonic() < deadline
            settles_on(serial_of(renewed_cert))

        expired_cert, expired_key = pki.server("expired", expired=True)
        shutil.copy(expired_cert, cert_file)
        shutil.copy(expired_key, key_file)
        time.sleep(1)
        settles_on(serial_of(renewed_cert))
        assert expiry_metric() == pytest.approx(renewed_until)
    finally:
        proc.send_signal(signal.SIGTERM)
        proc.wait(timeout=30)
    logged = (tmp_path / "gateway.log").read_text()
    assert "took the replaced files; now serving the certificate CN=docbus.example.gov.vn" in logged
    assert "the replaced certificate files cannot serve (the certificate and key cannot serve TLS" in logged
    assert "the replaced certificate files cannot serve (the certificate expired on" in logged
    assert "Traceback" not in logged


def mutual_tls(env: dict[str, str], tmp_path: Path) -> tuple[Pki, Pki]:
    """Sets ``env`` up for a gateway on mutual TLS: its certificate from the province's CA (the first ``Pki``),
    clients' certificates from the agencies' CA (the second, for making them)."""
    pki = Pki(tmp_path / "pki")
    cert_file, key_file = pki.server()
    agencies = Pki(tmp_path / "agencies", "Agencies' CA")
    env |= {
        "DOCBUS_TLS_CERT_FILE": str(cert_file),
        "DOCBUS_TLS_KEY_FILE": str(key_file),
        "DOCBUS_TLS_CLIENT_CA_FILE": str(agencies.ca_file),
    }
    return pki, agencies


def test_a_gateway_on_mutual_tls_takes_only_clients_with_a_certificate_of_its_client_ca(
    env: dict[str, str], tmp_path: Path
) -> None:
    pki, agencies = mutual_tls(env, tmp_path)
    client_cert, client_key = agencies.client("g22", "000.00.00.G22")
    stranger_cert, stranger_key = Pki(tmp_path / "stranger", "Another CA").client("g22", "000.00.00.G22")
    finding = https_finding(env)
    assert finding["verdict"] == "ok" and "clients must show a certificate of the client CA" in finding["detail"]
    broken = https_finding({**env, "DOCBUS_TLS_CLIENT_CA_FILE": str(tmp_path / "none.pem")})
    assert broken["verdict"] == "fail" and "the client CA file cannot be used" in broken["detail"], broken
    lone = docbus({**env, "DOCBUS_TLS_CERT_FILE": "", "DOCBUS_TLS_KEY_FILE": ""}, "serve", "--port", "9")
    assert lone.returncode == 2 and "tls_client_ca_file is for HTTPS" in lone.stderr

    key = docbus(env, "agency", "add", SENDER, "--name", "VPCP").stdout.strip().splitlines()[-1]
    trusted = ssl.create_default_context(cafile=str(pki.ca_file))
    trusted.load_cert_chain(str(client_cert), str(client_key))
    proc, port = serve_https(env, tmp_path, trusted, "--log-level", "warning")
    url = f"https://127.0.0.1:{port}"
    try:
        ca = ["--ca-file", str(pki.ca_file)]
        sent = docbus(env, "send", str(DOC), "--key", key, "--url", url, *ca, "--client-cert", str(client_cert),
                      "--client-key", str(client_key))  # fmt: skip
        assert sent.returncode == 0, sent.stderr
        assert orjson.loads(sent.stdout)["sender"] == SENDER

        for refused in ([], ["--client-cert", str(stranger_cert), "--client-key", str(stranger_key)]):
            answer = docbus(env, "send", str(DOC), "--key", key, "--url", url, *ca, *refused, "--attempts", "1")
            assert answer.returncode == 1, answer.stderr
            assert "could not be reached" in answer.stderr and "--client-cert CERT.pem" in answer.stderr
        half = docbus(env, "send", str(DOC), "--key", key, "--url", url, *ca, "--client-cert", str(client_cert))
        assert half.returncode == 2 and "--client-cert and --client-key go together" in half.stderr

        # A system whose key is encrypted gives its password in a file, never on the command line.
        locked_cert, locked_key = agencies.client("locked", SENDER, password="mật-khẩu 1")
        locked = [*ca, "--client-cert", str(locked_cert), "--client-key", str(locked_key)]
        password_file, wrong_file = tmp_path / "key-password", tmp_path / "wrong-password"
        password_file.write_text("mật-khẩu 1\n", encoding="utf-8")
        wrong_file.write_text("mật-khẩu 2\n", encoding="utf-8")
        no_password = docbus(env, "send", str(DOC), "--key", key, "--url", url, *locked)
        assert no_password.returncode == 2, no_password.stderr
        assert "the key is encrypted and no password is set (give it with --client-key-password-file)" in (
            no_password.stderr
        )
        wrong = docbus(env, "send", str(DOC), "--key", key, "--url", url, *locked,
                       "--client-key-password-file", str(wrong_file))  # fmt: skip
        assert wrong.returncode == 2 and "the password does not open the key" in wrong.stderr
        assert "mật-khẩu" not in wrong.stderr
        opened = docbus(env, "send", str(DOC), "--key", key, "--url", url, *locked, "--idempotency-key", "locked-1",
                        "--client-key-password-file", str(password_file))  # fmt: skip
        assert opened.returncode == 0, opened.stderr
        assert orjson.loads(opened.stdout)["sender"] == SENDER
    finally:
        proc.send_signal(signal.SIGTERM)
        proc.wait(timeout=30)
    assert orjson.loads(sent.stdout)["message_id"]


def test_a_replaced_client_ca_file_is_taken_without_a_restart(env: dict[str, str], tmp_path: Path) -> None:
    """A province that moves its agencies to a new CA replaces the client CA file: clients of the new CA get in
    from then on, those of a CA no longer in it do not, and a file that cannot be used is not taken."""
    pki, agencies = mutual_tls(env, tmp_path)
    successor = Pki(tmp_path / "successor", "Agencies' new CA")
    ca_file = tmp_path / "client-ca.pem"
    shutil.copy(agencies.ca_file, ca_file)
    env |= {"DOCBUS_TLS_CLIENT_CA_FILE": str(ca_file), "DOCBUS_TLS_RELOAD_CHECK_SECONDS": "0.3"}
    old_client, new_client = agencies.client("old", SENDER), successor.client("new", SENDER)

    def context(client: tuple[Path, Path]) -> ssl.SSLContext:
        tls = ssl.create_default_context(cafile=str(pki.ca_file))
        tls.load_cert_chain(*client)
        return tls

    proc, port = serve_https(env, tmp_path, context(old_client), "--log-level", "info")

    def lets_in(client: tuple[Path, Path]) -> bool:
        try:
            answer = httpx.get(f"https://127.0.0.1:{port}/healthz", verify=context(client), timeout=5)
        except (httpx.TransportError, ssl.SSLError):
            return False
        return answer.status_code == 200

    def settles(old: bool, new: bool) -> None:
        """Waits until five connections in a row see the CAs as expected."""
        deadline, streak = time.monotonic() + 30, 0
        while streak < 5:
            assert time.monotonic() < deadline, f"the old CA's client let in: {lets_in(old_client)}, the new's: " \
                f"{lets_in(new_client)}; expected {old} and {new}"  # fmt: skip
            streak = streak + 1 if (lets_in(old_client), lets_in(new_client)) == (old, new) else 0
            time.sleep(0.1)

    try:
        settles(old=True, new=False)
        ca_file.write_bytes(agencies.ca_file.read_bytes() + successor.ca_file.read_bytes())  # both, for a while
        settles(old=True, new=True)
        shutil.copy(successor.ca_file, ca_file)  # then only the new one
        settles(old=False, new=True)
        ca_file.write_text("not a certificate\n")  # a broken file is not taken
        time.sleep(1)
        settles(old=False, new=True)
    finally:
        proc.send_signal(signal.SIGTERM)
        proc.wait(timeout=30)
    logged = (tmp_path / "gateway.log").read_text()
    assert "the replaced certificate files cannot serve (the client CA file cannot be used" in logged
    assert "Traceback" not in logged


def test_a_key_bound_to_a_client_certificate_is_accepted_only_with_that_certificate(
    env: dict[str, str], tmp_path: Path
) -> None:
    pki, agencies = mutual_tls(env, tmp_path)
    env["DOCBUS_CREDENTIAL_CACHE_SECONDS"] = "0"
    own_cert, own_key = agencies.client("g22", SENDER)
    other_cert, other_key = agencies.client("h41", "000.00.00.H41")  # the same CA: the handshake lets it in
    key = docbus(env, "agency", "add", SENDER, "--name", "VPCP").stdout.strip().splitlines()[-1]
    not_a_certificate = docbus(env, "agency", "bind-certificate", SENDER, str(own_key))
    assert not_a_certificate.returncode == 2 and "holds no X.509 certificate" in not_a_certificate.stderr
    bound = docbus(env, "agency", "bind-certificate", SENDER, str(own_cert))
    assert bound.returncode == 0, bound.stderr
    fingerprint = x509.load_pem_x509_certificate(own_cert.read_bytes()).fingerprint(hashes.SHA256()).hex()
    assert f"CN={SENDER}" in bound.stdout and fingerprint in bound.stdout
    assert f"only with the client certificate SHA-256 {fingerprint[:16]}" in docbus(env, "agency", "list").stdout

    trusted = ssl.create_default_context(cafile=str(pki.ca_file))
    trusted.load_cert_chain(str(own_cert), str(own_key))
    proc, port = serve_https(env, tmp_path, trusted, "--log-level", "warning")
    url = f"https://127.0.0.1:{port}"

    def send(client_cert: Path, client_key: Path) -> subprocess.CompletedProcess[str]:
        tls = ["--ca-file", str(pki.ca_file), "--client-cert", str(client_cert), "--client-key", str(client_key)]
        return docbus(env, "send", str(DOC), "--key", key, "--url", url, *tls, "--attempts", "1")

    try:
        sent = send(own_cert, own_key)
        assert sent.returncode == 0, sent.stderr
        assert orjson.loads(sent.stdout)["sender"] == SENDER

        other = x509.load_pem_x509_certificate(other_cert.read_bytes()).fingerprint(hashes.SHA256()).hex()
        refused = send(other_cert, other_key)
        assert refused.returncode == 1
        assert '"status": 403' in refused.stderr
        assert f"whose SHA-256 fingerprint begins {fingerprint[:16]}" in refused.stderr
        assert f"this request showed the certificate with SHA-256 {other[:16]}" in refused.stderr
        with httpx.Client(base_url=url, verify=trusted) as client:  # the certificate travels with every request
            mine = client.get("/v1/messages", headers={"Authorization": f"Bearer {key}"})
        assert mine.status_code == 200, mine.text

        # The agency's system renews its certificate: the new one is bound, the old one kept for the change-over.
        renewal = docbus(env, "agency", "bind-certificate", SENDER, str(other_cert), "--keep-old-for", "1h")
        assert renewal.returncode == 0, renewal.stderr
        assert f"with the one bound before ({fingerprint[:16]}…)" in renewal.stdout
        assert f"old certificate {fingerprint[:16]}… until" in docbus(env, "agency", "list").stdout
        assert send(own_cert, own_key).returncode == 0 and send(other_cert, other_key).returncode == 0
        assert docbus(env, "agency", "bind-certificate", SENDER, str(other_cert)).returncode == 0  # over at once
        after = send(own_cert, own_key)
        assert after.returncode == 1 and f"this request showed the certificate with SHA-256 {fingerprint[:16]}" in (
            after.stderr
        )

        unbound = docbus(env, "agency", "unbind-certificate", SENDER)
        assert unbound.returncode == 0 and "any client certificate again" in unbound.stdout
        assert send(other_cert, other_key).returncode == 0
    finally:
        proc.send_signal(signal.SIGTERM)
        proc.wait(timeout=30)
