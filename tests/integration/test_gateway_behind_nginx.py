"""The gateway behind a real nginx that ends TLS, configured by the shipped ``deploy/nginx/docbus.conf``: a key
bound to an agency's certificate is accepted when nginx verified that certificate and forwarded it, and refused
when the client showed another, showed none but wrote the header itself, or went round the proxy."""

from __future__ import annotations

import os
import signal
import ssl
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from urllib.parse import quote

import httpx
import orjson
import pytest

from docbus.gateway.tls_peer import certificate_fingerprint

from ..conftest import REPO, SAMPLES, free_port, require_service
from ..pki import Pki

DOC = SAMPLES / "edoc_with_attachment_dc0bdef0.edxml"
SENDER = "000.00.00.G22"
SHIPPED = REPO / "deploy" / "nginx" / "docbus.conf"


def docbus(env: dict[str, str], *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "docbus.cli", *args], env=env, capture_output=True, text=True, timeout=60
    )


def wait_until_answers(url: str, proc: subprocess.Popen[bytes], what: str, **client: object) -> None:
    for _ in range(300):
        assert proc.poll() is None, f"{what} exited during start-up"
        try:
            httpx.get(url, timeout=2, **client)  # type: ignore[arg-type]
            return
        except httpx.TransportError:
            time.sleep(0.05)
    raise AssertionError(f"{what} did not answer at {url}")


@pytest.fixture
def nginx_binary() -> str:
    return require_service("DOCBUS_TEST_NGINX", "nginx")


def nginx_config(folder: Path, port: int, gateway_port: int, pki: Pki, agencies: Pki) -> Path:
    """The shipped server block with this test's port, gateway and certificates, inside a minimal nginx.conf."""
    server_cert, server_key = pki.server("proxy")
    site = SHIPPED.read_text()
    for shipped, ours in {
        "listen 443 ssl;": f"listen 127.0.0.1:{port} ssl;",
        "server 127.0.0.1:8080;": f"server 127.0.0.1:{gateway_port};",
        "/etc/docbus/tls/gateway-cert.pem": str(server_cert),
        "/etc/docbus/tls/gateway-key.pem": str(server_key),
        "/etc/docbus/tls/agencies-ca.pem": str(agencies.ca_file),
    }.items():
        assert shipped in site, f"{SHIPPED} no longer has {shipped!r}"
        site = site.replace(shipped, ours)
    (folder / "docbus.conf").write_text(site)
    temp = {name: folder / name for name in ("body", "proxy", "fastcgi", "uwsgi", "scgi")}
    for path in temp.values():
        path.mkdir()
    conf = folder / "nginx.conf"
    conf.write_text(
        ("user root;\n" if os.geteuid() == 0 else "")
        + f"worker_processes 1;\npid {folder}/nginx.pid;\nerror_log {folder}/error.log warn;\n"
        + "events { worker_connections 256; }\n"
        + "http {\n  access_log off;\n"
        + "".join(f"  {name}_temp_path {path};\n" for name, path in temp.items()).replace(
            "body_temp", "client_body_temp"
        )
        + f"  include {folder}/docbus.conf;\n}}\n"
    )
    return conf


@pytest.fixture
def deployment(tmp_path: Path, nginx_binary: str) -> Iterator[tuple[str, str, dict[str, str], Pki, Pki]]:
    """``docbus serve`` on loopback (plain HTTP, trusting 127.0.0.1 as its proxy) behind nginx on HTTPS; yields
    (nginx's URL, the gateway's URL, the gateway's environment, the province's CA, the agencies' CA)."""
    pki, agencies = Pki(tmp_path / "pki"), Pki(tmp_path / "agencies", "Agencies' CA")
    env = {k: v for k, v in os.environ.items() if not k.startswith("DOCBUS_")}
    env |= {
        "DOCBUS_DATA_DIR": str(tmp_path / "data"),
        "DOCBUS_TRUSTED_PROXIES": "127.0.0.1",
        "DOCBUS_CREDENTIAL_CACHE_SECONDS": "0",
    }
    gateway_port, proxy_port = free_port(), free_port()
    (tmp_path / "nginx").mkdir()
    conf = nginx_config(tmp_path / "nginx", proxy_port, gateway_port, pki, agencies)
    checked = subprocess.run([nginx_binary, "-t", "-c", str(conf)], capture_output=True, text=True, timeout=30)
    assert checked.returncode == 0, checked.stderr
    with (tmp_path / "gateway.log").open("ab") as log:
        gateway = subprocess.Popen(
            [sys.executable, "-m", "docbus.cli", "serve", "--host", "127.0.0.1", "--port", str(gateway_port)],
            env=env,
            stdout=log,
            stderr=subprocess.STDOUT,
        )
        nginx = subprocess.Popen(
            [nginx_binary, "-c", str(conf), "-g", "daemon off;"], stdout=log, stderr=subprocess.STDOUT
        )
    try:
        gateway_url, proxy_url = f"http://127.0.0.1:{gateway_port}", f"https://127.0.0.1:{proxy_port}"
        wait_until_answers(f"{gateway_url}/healthz", gateway, "the gateway")
        wait_until_answers(
            f"{proxy_url}/healthz", nginx, "nginx", verify=ssl.create_default_context(cafile=pki.ca_file)
        )
        yield proxy_url, gateway_url, env, pki, agencies
    finally:
        nginx.send_signal(signal.SIGQUIT)
        gateway.send_signal(signal.SIGTERM)
        nginx.wait(timeout=30)
        gateway.wait(timeout=30)


def test_a_bound_key_is_accepted_only_with_the_certificate_nginx_verified_and_forwarded(
    deployment: tuple[str, str, dict[str, str], Pki, Pki], tmp_path: Path
) -> None:
    proxy_url, gateway_url, env, pki, agencies = deployment
    own_cert, own_key = agencies.client("g22", SENDER)
    other_cert, other_key = agencies.client("h41", "000.00.00.H41")  # the same CA: nginx lets it in
    stranger_cert, stranger_key = Pki(tmp_path / "stranger", "Another CA").client("g22", SENDER)
    fingerprint, other = certificate_fingerprint(own_cert)[0], certificate_fingerprint(other_cert)[0]
    key = docbus(env, "agency", "add", SENDER, "--name", "VPCP").stdout.strip().splitlines()[-1]
    assert docbus(env, "agency", "bind-certificate", SENDER, str(own_cert)).returncode == 0
    body = DOC.read_bytes()
    headers = {"Authorization": f"Bearer {key}", "Content-Type": "application/xml"}

    def through_nginx(cert: Path | None, key_file: Path | None, extra: dict[str, str] | None = None) -> httpx.Response:
        tls = ssl.create_default_context(cafile=pki.ca_file)
        if cert is not None and key_file is not None:
            tls.load_cert_chain(cert, key_file)
        with httpx.Client(base_url=proxy_url, verify=tls, timeout=30) as client:
            return client.post("/v1/messages", content=body, headers={**headers, **(extra or {})})

    accepted = through_nginx(own_cert, own_key)
    assert accepted.status_code == 202, accepted.text
    message_id = accepted.json()["message_id"]

    refused = through_nginx(other_cert, other_key)
    assert refused.status_code == 403, refused.text
    assert refused.headers["content-type"] == "application/problem+json"
    assert f"fingerprint begins {fingerprint[:16]}" in refused.json()["detail"]
    assert f"this request showed the certificate with SHA-256 {other[:16]}" in refused.json()["detail"]

    # No certificate, but the header written by the client: nginx replaces it, so docbus sees none.
    spoofed = {"X-Client-Cert": quote(own_cert.read_text(), safe="")}
    forged = through_nginx(None, None, spoofed)
    assert forged.status_code == 403 and "this request showed none" in forged.json()["detail"], forged.text

    # A certificate of a CA nginx does not trust never reaches docbus.
    untrusted = through_nginx(stranger_cert, stranger_key)
    assert untrusted.status_code == 400 and "problem+json" not in untrusted.headers.get("content-type", "")

    # Round the proxy, from an address that is not it: the header is not believed.
    around = httpx.Client(base_url=gateway_url, transport=httpx.HTTPTransport(local_address="127.0.0.2"))
    with around:
        direct = around.post("/v1/messages", content=body, headers={**headers, **spoofed})
    assert direct.status_code == 403 and "this request showed none" in direct.json()["detail"], direct.text

    # Only the one accepted message was stored.
    operator = docbus(env, "agency", "add", "000.00.00.H99", "--name", "Ops", "--role", "operator")
    operator_key = operator.stdout.strip().splitlines()[-1]
    listed = httpx.get(f"{gateway_url}/v1/messages", headers={"Authorization": f"Bearer {operator_key}"})
    assert listed.status_code == 200, listed.text
    assert [m["message_id"] for m in orjson.loads(listed.content)["items"]] == [message_id]

    # Reading through the proxy works the same way: the certificate travels with every request.
    tls = ssl.create_default_context(cafile=pki.ca_file)
    tls.load_cert_chain(own_cert, own_key)
    with httpx.Client(base_url=proxy_url, verify=tls) as client:
        mine = client.get(f"/v1/messages/{message_id}", headers={"Authorization": f"Bearer {key}"})
    assert mine.status_code == 200 and mine.json()["message_id"] == message_id, mine.text
