"""Forwarding over TLS to destinations whose certificates come from their own CA, and over mutual TLS.

Real HTTPS servers on loopback: the axis simulators (``serve(..., tls=)`` in the test's loop, and ``docbus sim
--tls-cert --tls-key --client-ca`` as a process) and a webhook receiver, with certificates from a CA made here.
Each way a connection can fail its checks is refused with its reason in the delivery error, retriable (a CA file
can be fixed, a certificate renewed), with nothing delivered; ``docbus serve`` configured from the environment
forwards over mutual TLS and gets the axis' receipts back the same way; ``docbus config check`` and start-up refuse
a key that does not open.
"""

from __future__ import annotations

import asyncio
import hashlib
import os
import signal
import subprocess
import sys
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from docbus.adapters.base import RetriableDeliveryError
from docbus.adapters.registry import build_adapter
from docbus.simulators import ServerTls, SimulatorConfig, create_app, serve
from docbus.tls_client import checking_context

from ..conftest import SAMPLES, free_port
from ..pki import Pki
from .helpers import config_check_finding
from .test_adapters_contract import WEBHOOK_SECRET, WebhookReceiver, outbound_for
from .test_crash_safety import wait_ready

DOC = SAMPLES / "edoc_with_attachment_dc0bdef0.edxml"  # G22 to H41, H14, G17
SENDER = "000.00.00.G22"
RECEIVERS = ("000.00.00.H41", "000.00.00.H14", "000.00.00.G17")
PASSWORD = "client-key-passw0rd"
AXIS = {"system_id": "docbus", "secret": "docbus-secret", "timeout": 5, "connect_timeout": 2}


class Parties:
    """The destination's CA and certificate, our client certificate from it, and one from a CA it does not know."""

    def __init__(self, folder: Path) -> None:
        self.pki = Pki(folder / "province")
        self.server_cert, self.server_key = self.pki.server()
        self.client_cert, self.client_key = self.pki.client("docbus", "docbus.example.gov.vn", password=PASSWORD)
        stranger = Pki(folder / "stranger", "Some other CA")
        self.other_ca = stranger.ca_file
        self.other_cert, self.other_key = stranger.client("docbus", "docbus.example.gov.vn")

    def server_tls(self, *, mutual: bool) -> ServerTls:
        client_ca = str(self.pki.ca_file) if mutual else None
        return ServerTls(str(self.server_cert), str(self.server_key), client_ca_file=client_ca)

    def client_settings(self) -> dict[str, str]:
        return {
            "ca_file": str(self.pki.ca_file),
            "cert_file": str(self.client_cert),
            "key_file": str(self.client_key),
            "key_password": PASSWORD,
        }

    def inspector(self, url: str) -> httpx.AsyncClient:
        """A client the destination takes, for looking inside it."""
        verify = checking_context(
            self.pki.ca_file, cert_file=self.client_cert, key_file=self.client_key, key_password=PASSWORD
        )
        return httpx.AsyncClient(base_url=url, verify=verify, timeout=5)


@pytest.fixture
def parties(tmp_path: Path) -> Parties:
    return Parties(tmp_path)


@pytest.fixture
def base_env(tmp_path: Path) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("DOCBUS_")}
    return env | {"DOCBUS_DATA_DIR": str(tmp_path / "data")}


class Endpoint:
    """A running HTTPS destination of one adapter kind, and what reached it."""

    def __init__(self, adapter: str, url: str, base: dict[str, Any], count: Any) -> None:
        self.adapter, self.url, self.base, self.count = adapter, url, base, count


@pytest.fixture(params=["national_axis", "provincial_axis", "webhook"])
async def endpoint(request: pytest.FixtureRequest, parties: Parties) -> AsyncIterator[Endpoint]:
    name: str = request.param
    tls = parties.server_tls(mutual=True)
    if name == "webhook":
        receiver = WebhookReceiver(WEBHOOK_SECRET)
        async with serve(receiver.app, tls=tls) as url:

            async def hooked() -> int:
                return len(receiver.stored)

            yield Endpoint(name, url, {"url": f"{url}/hook", "secret": WEBHOOK_SECRET, "timeout": 5}, hooked)
        return
    kind = "national-axis" if name == "national_axis" else "provincial-axis"
    async with serve(create_app(kind, SimulatorConfig()), tls=tls) as url, parties.inspector(url) as sim:

        async def received() -> int:
            return len((await sim.get("/_sim/received")).json()["received"])

        yield Endpoint(name, url, {"url": url, **AXIS}, received)


async def refused(endpoint: Endpoint, **tls: str) -> str:
    """Delivers once with these TLS settings; the retriable error's reason (it must fail)."""
    adapter = build_adapter(endpoint.adapter, {**endpoint.base, **tls})
    try:
        with pytest.raises(RetriableDeliveryError) as caught:
            await adapter.deliver(outbound_for(DOC.read_bytes()))
    finally:
        await adapter.aclose()
    return caught.value.reason


async def test_each_failed_check_is_refused_with_its_reason_and_nothing_delivered(
    endpoint: Endpoint, parties: Parties
) -> None:
    ca, cert, key = str(parties.pki.ca_file), str(parties.client_cert), str(parties.client_key)
    # The system's CAs do not know the province's CA.
    reason = await refused(endpoint, cert_file=cert, key_file=key, key_password=PASSWORD)
    assert "certificate failed the check: self-signed certificate in certificate chain" in reason
    # A CA file of another authority.
    reason = await refused(endpoint, ca_file=str(parties.other_ca), cert_file=cert, key_file=key, key_password=PASSWORD)
    assert "certificate failed the check" in reason
    # The host name is checked: the certificate is for 127.0.0.1, not for localhost.
    localhost = {**endpoint.base, "url": endpoint.base["url"].replace("127.0.0.1", "localhost")}
    adapter = build_adapter(endpoint.adapter, {**localhost, **parties.client_settings()})
    try:
        with pytest.raises(RetriableDeliveryError, match="Hostname mismatch, certificate is not valid for 'localhost'"):
            await adapter.deliver(outbound_for(DOC.read_bytes()))
    finally:
        await adapter.aclose()
    # Mutual TLS: no client certificate, then one from a CA the destination does not take.
    for tls in (
        {"ca_file": ca},
        {"ca_file": ca, "cert_file": str(parties.other_cert), "key_file": str(parties.other_key)},
    ):
        reason = await refused(endpoint, **tls)
        assert "certificate" in reason.lower(), reason  # the TLS alert, or the hint beside a reset
    assert await endpoint.count() == 0

    adapter = build_adapter(endpoint.adapter, {**endpoint.base, **parties.client_settings()})
    try:
        result = await adapter.deliver(outbound_for(DOC.read_bytes()))
    finally:
        await adapter.aclose()
    assert result.remote_id and await endpoint.count() == 1


def docbus(env: dict[str, str], *args: str, timeout: float = 60) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "docbus.cli", *args], env=env, capture_output=True, text=True, timeout=timeout
    )


async def test_docbus_serve_forwards_over_mutual_tls_and_gets_the_receipts_back(
    tmp_path: Path, parties: Parties, base_env: dict[str, str]
) -> None:
    sim_port, port = free_port(), free_port()
    sim_url = f"https://127.0.0.1:{sim_port}"
    routes = tmp_path / "routes.toml"
    routes.write_text(
        '[[destination]]\nname = "national_axis"\n\n[[rule]]\nany = true\ndestination = "national_axis"\n'
    )
    env = {
        **base_env,
        "DOCBUS_ROUTES_FILE": str(routes),
        "DOCBUS_RECEIPT_POLL_SECONDS": "0.2",
        "DOCBUS_ADAPTERS__NATIONAL_AXIS__URL": sim_url,
        "DOCBUS_ADAPTERS__NATIONAL_AXIS__SYSTEM_ID": "docbus",
        "DOCBUS_ADAPTERS__NATIONAL_AXIS__SECRET": "docbus-secret",
        **{f"DOCBUS_ADAPTERS__NATIONAL_AXIS__{name.upper()}": v for name, v in parties.client_settings().items()},
    }
    key = docbus(env, "agency", "add", SENDER, "--name", "Văn phòng Chính phủ").stdout.strip().splitlines()[-1]
    tls_args = ["--tls-cert", str(parties.server_cert), "--tls-key", str(parties.server_key)]
    sim_cmd = ["sim", "national-axis", "--port", str(sim_port), *tls_args, "--client-ca", str(parties.pki.ca_file)]
    log = (tmp_path / "processes.log").open("ab")
    sim = subprocess.Popen(
        [sys.executable, "-m", "docbus.cli", *sim_cmd, "--receipt-delays", "0.05,0.1,0.15", "--log-level", "warning"],
        env=env,
        stdout=log,
        stderr=subprocess.STDOUT,
    )
    bus: subprocess.Popen[bytes] | None = None
    try:
        async with parties.inspector(sim_url) as inspector:
            for _ in range(200):  # the simulator takes only clients with our certificate
                try:
                    if (await inspector.get("/_sim/faults")).status_code == 200:
                        break
                except httpx.TransportError:
                    await asyncio.sleep(0.05)
            with pytest.raises(httpx.TransportError):  # and no client without one
                await httpx.AsyncClient(verify=checking_context(parties.pki.ca_file)).get(f"{sim_url}/_sim/faults")

            # The check probes the axis as a delivery would connect, and names what stands in the way.
            data_dir = Path(env["DOCBUS_DATA_DIR"])
            found = config_check_finding("destination national_axis", env, data_dir)
            assert found["verdict"] == "ok", found
            assert (
                f"reached 127.0.0.1:{sim_port} over TLSv1.3, certificate commonName=docbus.example.gov.vn"
                in (found["detail"])
            )
            prefix = "DOCBUS_ADAPTERS__NATIONAL_AXIS__"
            no_client = {k: v for k, v in env.items() if k not in {prefix + "CERT_FILE", prefix + "KEY_FILE"}}
            del no_client[prefix + "KEY_PASSWORD"]
            found = config_check_finding("destination national_axis", no_client, data_dir)
            assert found["verdict"] == "fail" and "client certificate" in found["detail"], found
            stranger = {**env, prefix + "CA_FILE": str(parties.other_ca)}
            found = config_check_finding("destination national_axis", stranger, data_dir)
            assert found["verdict"] == "fail", found
            assert "certificate failed the check: self-signed certificate in certificate chain" in found["detail"]
            shown = docbus(env, "config", "show")
            assert prefix + "KEY_PASSWORD" in shown.stdout and PASSWORD not in shown.stdout
            wrong = {**env, prefix + "KEY_PASSWORD": "not-" + PASSWORD}
            found = config_check_finding("destination national_axis", wrong, data_dir)
            assert found["verdict"] == "fail" and "the password does not open the key" in found["detail"], found
            assert PASSWORD not in found["detail"]
            for role in (["serve", "--port", str(port)], ["worker"]):  # stopped before they start, in one line
                started = docbus(wrong, *role, timeout=60)
                assert started.returncode == 2, started.stderr
                assert started.stderr.strip() == (
                    "error: destination national_axis: adapter 'national_axis': key_file, key_password: "
                    "the password does not open the key (or it is not a PEM private key)"
                )

            bus = subprocess.Popen(
                [sys.executable, "-m", "docbus.cli", "serve", "--port", str(port), "--log-level", "warning"],
                env=env,
                stdout=log,
                stderr=subprocess.STDOUT,
            )
            base = f"http://127.0.0.1:{port}"
            await wait_ready(base, bus)
            async with httpx.AsyncClient(base_url=base, headers={"Authorization": f"Bearer {key}"}) as agency:
                answer = await agency.post(
                    "/v1/messages", content=DOC.read_bytes(), headers={"Content-Type": "application/xml"}
                )
                assert answer.status_code == 202, answer.text
                message_id = answer.json()["message_id"]
                deadline = time.monotonic() + 60
                while True:
                    events = (await agency.get(f"/v1/messages/{message_id}")).json()["events"]
                    finished = {
                        e["detail"]["from"] for e in events if e["type"] == "RECEIPT" and e["detail"]["code"] == "06"
                    }
                    if finished == set(RECEIVERS):
                        break
                    assert time.monotonic() < deadline, events
                    await asyncio.sleep(0.2)
            delivered = [e for e in events if e["type"] == "DELIVERED"]
            assert [e["destination"] for e in delivered] == ["national_axis"]
            received = (await inspector.get("/_sim/received")).json()["received"]
            assert [r["idempotency_key"] for r in received] == [message_id]
            assert delivered[0]["detail"]["remote_id"] == received[0]["DocId"]
    finally:
        running = [p for p in (bus, sim) if p is not None]
        for process in running:
            process.send_signal(signal.SIGTERM)
        for process in running:
            process.wait(timeout=30)
        log.close()
    assert received[0]["sha256"] == hashlib.sha256(DOC.read_bytes()).hexdigest()
