"""The adapter contract, run on every built-in adapter against a real destination on loopback.

national_axis and provincial_axis talk to the axis simulators over HTTP, webhook to a small receiving app
under uvicorn, file to a temporary folder. The three HTTP adapters run the suite a second time over mutual TLS
(``…-mtls``): the destination serves a certificate of a CA made here, trusted through ``ca_file``, and takes only
clients that show a certificate that CA signed (``cert_file``, ``key_file``, an encrypted key). Each destination
is wrapped in a harness that can look inside it (what it has, how many duplicates it counted) and break it (down,
failing, refusing for good).
At the end: a third-party adapter, installed from a throwaway distribution, joins through the entry point.
"""

from __future__ import annotations

import asyncio
import dataclasses
import hashlib
import hmac
import importlib
import ssl
import subprocess
import sys
import textwrap
import uuid
from abc import ABC, abstractmethod
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from contextlib import AsyncExitStack
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Literal, TypeVar

import httpx
import orjson
import pytest
from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse
from lxml import etree

from docbus.adapters.base import (
    Adapter,
    DeliveryResult,
    Outbound,
    PermanentDeliveryError,
    RetriableDeliveryError,
)
from docbus.adapters.registry import build_adapter, discover_adapters
from docbus.envelope import Envelope, MessageKind, SchemaRef
from docbus.ids import new_message_id, new_trace_id
from docbus.simulators import ServerTls, SimulatorConfig, SimulatorKind, create_app, serve
from docbus.tls_client import checking_context

from ..pki import Pki

NS = {"e": "http://www.mic.gov.vn/TBT/QCVN_102_2016"}
DOCUMENT = "edoc_with_attachment_dc0bdef0.edxml"  # G22 to H41, H14, G17
STATUS = "status_inbox__01.edxml"  # H41 answers G22 with 01
SIM_CONFIG = SimulatorConfig(receipt_delays=(0.05, 0.05, 0.05))
SIMULATORS: dict[str, SimulatorKind] = {"national_axis": "national-axis", "provincial_axis": "provincial-axis"}
WEBHOOK_SECRET = "contract-webhook-secret"
CLIENT_KEY_PASSWORD = "client-key-password"
Failure = Literal["down", "error"]
T = TypeVar("T")


def outbound_for(packet: bytes, *, message_id: str | None = None, attempt: int = 1) -> Outbound:
    """The outbound message a worker would hand an adapter for a sample packet (facts read with plain lxml)."""
    header = etree.fromstring(packet).find("e:edXMLEnvelope/e:edXMLHeader/e:MessageHeader", NS)
    assert header is not None
    status_code = header.findtext("e:StatusCode", namespaces=NS)
    kind = MessageKind.STATUS if status_code else MessageKind.EDOC
    receivers = [e.text.strip() for e in header.findall("e:To/e:OrganId", NS) if e.text]
    answered = header.findtext("e:ResponseFor/e:DocumentId", namespaces=NS)
    envelope = Envelope(
        message_id=message_id or new_message_id(),
        kind=kind,
        schema=SchemaRef(f"qcvn102.{kind.value}", "2016.1"),
        sender=str(header.findtext("e:From/e:OrganId", namespaces=NS)).strip(),
        receivers=tuple(receivers) or (str(header.findtext("e:ResponseFor/e:OrganId", namespaces=NS)).strip(),),
        business_id=str(header.findtext("e:DocumentId", namespaces=NS) or answered).strip(),
        sha256=hashlib.sha256(packet).hexdigest(),
        size=len(packet),
        received_at=datetime.now(UTC),
        content_type="application/xml",
        idempotency_key=None,
        trace_id=new_trace_id(),
        response_for=answered.strip() if status_code and answered else None,
        status_code=status_code.strip() if status_code else None,
    )
    return Outbound(envelope, packet, destination="contract", receivers=envelope.receivers, attempt=attempt)


async def eventually(probe: Callable[[], Awaitable[T | None]], timeout: float = 5.0) -> T:
    deadline = asyncio.get_running_loop().time() + timeout
    while True:
        found = await probe()
        if found:
            return found
        assert asyncio.get_running_loop().time() < deadline, "condition not met in time"
        await asyncio.sleep(0.02)


@dataclasses.dataclass(frozen=True)
class Copy:
    """One copy of a message as the destination holds it."""

    sha256: str
    kind: str
    duplicates: int | None  # duplicate submissions the destination counted (None: it keeps no count)


class Destination(ABC):
    """A real destination for one adapter, with ways to look inside it and to break it."""

    adapter: Adapter
    has_receipts = False

    @abstractmethod
    async def copies(self, message_id: str) -> list[Copy]: ...

    @abstractmethod
    async def fail(self, how: Failure) -> None: ...

    @abstractmethod
    async def restore(self) -> None: ...

    @abstractmethod
    async def refuse_for_good(self, outbound: Outbound) -> Outbound:
        """Arrange a permanent refusal; returns what to deliver to meet it."""


class AxisDestination(Destination):
    has_receipts = True

    def __init__(self, adapter: Adapter, url: str, verify: ssl.SSLContext | bool = True) -> None:
        self.adapter = adapter
        self.sim = httpx.AsyncClient(base_url=url, timeout=5, verify=verify)

    async def copies(self, message_id: str) -> list[Copy]:
        received = (await self.sim.get("/_sim/received")).json()["received"]
        return [
            Copy(entry["sha256"], entry["messagetype"], entry["duplicates"])
            for entry in received
            if entry["idempotency_key"] == message_id
        ]

    async def fail(self, how: Failure) -> None:
        faults = {"down": True} if how == "down" else {"error_rate": 1.0}
        (await self.sim.post("/_sim/faults", json=faults)).raise_for_status()

    async def restore(self) -> None:
        (await self.sim.delete("/_sim/faults")).raise_for_status()

    async def refuse_for_good(self, outbound: Outbound) -> Outbound:
        (await self.sim.post("/_sim/faults", json={"permanent_error_code": 22})).raise_for_status()
        return outbound


class WebhookReceiver:
    """A receiving endpoint that checks docbus' signature and stores each message id once."""

    def __init__(self, secret: str) -> None:
        self.secret = secret.encode()
        self.stored: dict[str, dict[str, Any]] = {}
        self.mode: str | None = None
        self.app = FastAPI()
        self.app.post("/hook")(self.hook)

    async def hook(self, request: Request) -> JSONResponse:
        if self.mode == "down":
            return JSONResponse({"detail": "maintenance"}, status_code=503)
        if self.mode == "error":
            return JSONResponse({"detail": "boom"}, status_code=500)
        if self.mode == "refuse":
            return JSONResponse({"detail": "we do not take these"}, status_code=422)
        body = await request.body()
        timestamp = request.headers["x-docbus-timestamp"]
        expected = "sha256=" + hmac.new(self.secret, f"{timestamp}.".encode() + body, hashlib.sha256).hexdigest()
        if not hmac.compare_digest(expected, request.headers["x-docbus-signature"]):
            return JSONResponse({"detail": "bad signature"}, status_code=401)
        message_id = request.headers["x-docbus-message-id"]
        known = self.stored.get(message_id)
        if known is not None:
            known["duplicates"] += 1
            return JSONResponse({"id": known["id"], "duplicate": True})
        self.stored[message_id] = {
            "id": f"hook-{len(self.stored) + 1}",
            "body": body,
            "kind": request.headers["x-docbus-kind"],
            "duplicates": 0,
        }
        return JSONResponse({"id": self.stored[message_id]["id"], "duplicate": False}, status_code=201)


class WebhookDestination(Destination):
    def __init__(self, adapter: Adapter, receiver: WebhookReceiver) -> None:
        self.adapter = adapter
        self.receiver = receiver

    async def copies(self, message_id: str) -> list[Copy]:
        found = self.receiver.stored.get(message_id)
        if found is None:
            return []
        return [Copy(hashlib.sha256(found["body"]).hexdigest(), found["kind"], found["duplicates"])]

    async def fail(self, how: Failure) -> None:
        self.receiver.mode = how

    async def restore(self) -> None:
        self.receiver.mode = None

    async def refuse_for_good(self, outbound: Outbound) -> Outbound:
        self.receiver.mode = "refuse"
        return outbound


class FileDestination(Destination):
    def __init__(self, adapter: Adapter, directory: Path) -> None:
        self.adapter = adapter
        self.directory = directory
        self.parked = directory.with_name(directory.name + "-unmounted")
        self.blocked: list[Path] = []

    async def copies(self, message_id: str) -> list[Copy]:
        copies = []
        for path in sorted(self.directory.glob(f"*/{message_id}.*")):
            if path.name.endswith(".meta.json"):
                continue
            meta = orjson.loads(path.with_name(f"{message_id}.meta.json").read_bytes())
            copies.append(Copy(hashlib.sha256(path.read_bytes()).hexdigest(), meta["kind"], None))
        return copies

    async def fail(self, how: Failure) -> None:
        if how == "down":  # the share is not mounted
            self.directory.rename(self.parked)
        else:  # the disk misbehaves: the sender's folder cannot be made
            for sender in ("000.00.00.G22", "000.00.00.H41"):
                blocker = self.directory / sender
                if not blocker.exists():
                    blocker.write_bytes(b"")
                    self.blocked.append(blocker)

    async def restore(self) -> None:
        if self.parked.exists():
            self.parked.rename(self.directory)
        for blocker in self.blocked:
            blocker.unlink()
        self.blocked.clear()

    async def refuse_for_good(self, outbound: Outbound) -> Outbound:
        envelope = dataclasses.replace(outbound.envelope, sender="../outside")
        return dataclasses.replace(outbound, envelope=envelope)


@pytest.fixture(
    params=[
        "national_axis",
        "provincial_axis",
        "webhook",
        "file",
        "national_axis-mtls",
        "provincial_axis-mtls",
        "webhook-mtls",
    ]
)
async def destination(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[Destination]:
    name, _, transport = str(request.param).partition("-")
    tls: ServerTls | None = None
    client_tls: dict[str, str] = {}
    verify: ssl.SSLContext | bool = True
    if transport == "mtls":
        pki = Pki(tmp_path / "pki")
        server_cert, server_key = pki.server()
        client_cert, client_key = pki.client("docbus", "docbus.example.gov.vn", password=CLIENT_KEY_PASSWORD)
        tls = ServerTls(str(server_cert), str(server_key), client_ca_file=str(pki.ca_file))
        client_tls = {
            "ca_file": str(pki.ca_file),
            "cert_file": str(client_cert),
            "key_file": str(client_key),
            "key_password": CLIENT_KEY_PASSWORD,
        }
        verify = checking_context(
            pki.ca_file, cert_file=client_cert, key_file=client_key, key_password=CLIENT_KEY_PASSWORD
        )
    async with AsyncExitStack() as stack:
        found: Destination
        if name in SIMULATORS:
            url = await stack.enter_async_context(serve(create_app(SIMULATORS[name], SIM_CONFIG), tls=tls))
            config = {"url": url, "system_id": "docbus", "secret": "docbus-secret", "timeout": 5, "connect_timeout": 2}
            axis = AxisDestination(build_adapter(name, config | client_tls), url, verify)
            stack.push_async_callback(axis.sim.aclose)
            found = axis
        elif name == "webhook":
            receiver = WebhookReceiver(WEBHOOK_SECRET)
            url = await stack.enter_async_context(serve(receiver.app, tls=tls))
            config = {"url": f"{url}/hook", "secret": WEBHOOK_SECRET, "timeout": 5}
            found = WebhookDestination(build_adapter("webhook", config | client_tls), receiver)
        else:
            (tmp_path / "drop").mkdir()
            found = FileDestination(build_adapter("file", {"directory": str(tmp_path / "drop")}), tmp_path / "drop")
        if transport == "mtls":
            assert url.startswith("https://")
        await found.adapter.start()
        stack.push_async_callback(found.adapter.aclose)
        yield found


def sha(packet: bytes) -> str:
    return hashlib.sha256(packet).hexdigest()


async def test_delivers_and_the_destination_has_it(destination: Destination, sample_bytes: dict[str, bytes]) -> None:
    packet = sample_bytes[DOCUMENT]
    outbound = outbound_for(packet)

    result = await destination.adapter.deliver(outbound)

    assert isinstance(result, DeliveryResult)
    assert result.remote_id
    assert result.duplicate is False
    assert await destination.copies(outbound.envelope.message_id) == [Copy(sha(packet), "edoc", _zero(destination))]


async def test_status_messages_travel_as_status(destination: Destination, sample_bytes: dict[str, bytes]) -> None:
    packet = sample_bytes[STATUS]
    outbound = outbound_for(packet)
    assert outbound.envelope.kind is MessageKind.STATUS

    await destination.adapter.deliver(outbound)

    assert [copy.kind for copy in await destination.copies(outbound.envelope.message_id)] == ["status"]


async def test_redelivery_is_kept_once_and_counted(destination: Destination, sample_bytes: dict[str, bytes]) -> None:
    packet = sample_bytes[DOCUMENT]
    first = await destination.adapter.deliver(outbound_for(packet, message_id=(message_id := new_message_id())))

    again = await destination.adapter.deliver(outbound_for(packet, message_id=message_id, attempt=2))

    assert again.duplicate is True
    assert again.remote_id == first.remote_id
    (copy,) = await destination.copies(message_id)
    assert copy.sha256 == sha(packet)
    assert copy.duplicates in (1, None)  # None: a folder keeps no count, the result says it


@pytest.mark.parametrize("how", ["down", "error"])
async def test_a_failing_destination_is_retriable_and_recovers(
    destination: Destination, sample_bytes: dict[str, bytes], how: Failure
) -> None:
    outbound = outbound_for(sample_bytes[DOCUMENT])
    await destination.fail(how)
    try:
        with pytest.raises(RetriableDeliveryError) as caught:
            await destination.adapter.deliver(outbound)
        assert caught.value.retriable is True
        assert await destination.copies(outbound.envelope.message_id) == []
    finally:
        await destination.restore()

    result = await destination.adapter.deliver(dataclasses.replace(outbound, attempt=2))

    assert result.duplicate is False
    assert len(await destination.copies(outbound.envelope.message_id)) == 1


async def test_a_permanent_refusal_is_permanent(destination: Destination, sample_bytes: dict[str, bytes]) -> None:
    outbound = await destination.refuse_for_good(outbound_for(sample_bytes[DOCUMENT]))
    try:
        with pytest.raises(PermanentDeliveryError) as caught:
            await destination.adapter.deliver(outbound)
    finally:
        await destination.restore()
    assert caught.value.retriable is False
    assert caught.value.reason
    assert await destination.copies(outbound.envelope.message_id) == []


async def test_business_receipts_come_back_and_are_acknowledged(
    destination: Destination, sample_bytes: dict[str, bytes]
) -> None:
    if not destination.has_receipts:
        assert await destination.adapter.fetch_receipts() == []
        return
    packet = sample_bytes[DOCUMENT]
    await destination.adapter.deliver(outbound_for(packet))
    expected = 3 * 3  # 01, 03, 06 from each of three receivers

    async def all_receipts() -> list[bytes] | None:
        fetched = await destination.adapter.fetch_receipts()
        return fetched if len(fetched) >= expected else None

    receipts = await eventually(all_receipts)

    document_id = etree.fromstring(packet).findtext(".//e:MessageHeader/e:DocumentId", namespaces=NS)
    codes: dict[str, list[str]] = {}
    for receipt in receipts:
        header = etree.fromstring(receipt).find(".//e:MessageHeader", NS)
        assert header is not None
        assert header.findtext("e:ResponseFor/e:DocumentId", namespaces=NS) == document_id
        codes.setdefault(str(header.findtext("e:From/e:OrganId", namespaces=NS)), []).append(
            str(header.findtext("e:StatusCode", namespaces=NS))
        )
    assert codes == {organ: ["01", "03", "06"] for organ in ("000.00.00.H41", "000.00.00.H14", "000.00.00.G17")}

    for index, receipt in enumerate(receipts):
        await destination.adapter.acknowledge_receipt(receipt, ok=index != 0)

    assert await destination.adapter.fetch_receipts() == []


async def test_aclose_is_idempotent(destination: Destination) -> None:
    await destination.adapter.aclose()
    await destination.adapter.aclose()


def _zero(destination: Destination) -> int | None:
    return None if isinstance(destination, FileDestination) else 0


# ---------------------------------------------------------------------------------------------------------------
# Third-party adapters join through the entry-point group, like the built-in ones.

ECHO_MODULE = '''
"""An adapter from outside docbus: remembers what it was given."""

from typing import ClassVar

from docbus.adapters.base import Adapter, AdapterSettings, DeliveryResult, Outbound


class EchoSettings(AdapterSettings):
    prefix: str = "echo"


class EchoAdapter(Adapter):
    name: ClassVar[str] = "{name}"
    Settings: ClassVar[type[AdapterSettings]] = EchoSettings
    delivered: ClassVar[list[str]] = []

    async def deliver(self, outbound: Outbound) -> DeliveryResult:
        EchoAdapter.delivered.append(outbound.envelope.message_id)
        return DeliveryResult(remote_id=f"{{self.settings.prefix}}-{{outbound.envelope.message_id}}")
'''

# A build backend in the standard library only, so the throwaway distribution builds offline with whatever
# setuptools (or none) the environment has: every module beside it goes into a wheel whose name, version and
# entry points come from pyproject.toml.
ECHO_BACKEND = """
import base64
import hashlib
import tomllib
import zipfile
from pathlib import Path


def build_wheel(wheel_directory, config_settings=None, metadata_directory=None):
    project = tomllib.loads(Path("pyproject.toml").read_text())["project"]
    dist = project["name"].replace("-", "_")
    info = f"{dist}-{project['version']}.dist-info"
    entry_points = "".join(
        f"[{group}]\\n" + "".join(f"{name} = {target}\\n" for name, target in points.items())
        for group, points in project["entry-points"].items()
    )
    files = {path.name: path.read_bytes() for path in Path(".").glob("*.py") if path.name != "echo_backend.py"}
    metadata = f"Metadata-Version: 2.1\\nName: {project['name']}\\nVersion: {project['version']}\\n"
    files[f"{info}/METADATA"] = metadata.encode()
    files[f"{info}/WHEEL"] = b"Wheel-Version: 1.0\\nRoot-Is-Purelib: true\\nTag: py3-none-any\\n"
    files[f"{info}/entry_points.txt"] = entry_points.encode()
    wheel_name = f"{dist}-{project['version']}-py3-none-any.whl"
    record = []
    with zipfile.ZipFile(Path(wheel_directory) / wheel_name, "w") as wheel:
        for path, data in files.items():
            wheel.writestr(path, data)
            digest = base64.urlsafe_b64encode(hashlib.sha256(data).digest()).rstrip(b"=").decode()
            record.append(f"{path},sha256={digest},{len(data)}")
        record.append(f"{info}/RECORD,,")
        wheel.writestr(f"{info}/RECORD", "\\n".join(record) + "\\n")
    return wheel_name
"""


def pip(*args: str) -> None:
    done = subprocess.run(
        [sys.executable, "-m", "pip", *args, "--disable-pip-version-check", "-q"],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 0, f"pip {' '.join(args)} failed:\n{done.stdout}\n{done.stderr}"


@pytest.fixture
def echo_distribution(tmp_path: Path) -> Iterator[str]:
    """A tiny distribution installed into this environment for the test; yields its adapter's name.

    Names carry a random suffix so that two test runs sharing the environment do not trip over each other.
    """
    suffix = uuid.uuid4().hex[:8]
    adapter_name, module, dist = f"echo_{suffix}", f"docbus_echo_adapter_{suffix}", f"docbus-echo-adapter-{suffix}"
    source = tmp_path / dist
    source.mkdir()
    (source / f"{module}.py").write_text(ECHO_MODULE.format(name=adapter_name))
    (source / "echo_backend.py").write_text(ECHO_BACKEND)
    (source / "pyproject.toml").write_text(
        textwrap.dedent(
            f"""
            [build-system]
            requires = []
            build-backend = "echo_backend"
            backend-path = ["."]

            [project]
            name = "{dist}"
            version = "0.0.1"

            [project.entry-points."docbus.adapters"]
            {adapter_name} = "{module}:EchoAdapter"
            """
        )
    )
    pip("install", "--no-deps", "--no-build-isolation", "--no-index", str(source))
    importlib.invalidate_caches()
    try:
        yield adapter_name
    finally:
        pip("uninstall", "-y", dist)
        sys.modules.pop(module, None)
        importlib.invalidate_caches()


async def test_a_third_party_adapter_joins_through_the_entry_point(
    echo_distribution: str, sample_bytes: dict[str, bytes]
) -> None:
    found = discover_adapters()
    assert {"national_axis", "provincial_axis", "webhook", "file", echo_distribution} <= set(found)
    assert issubclass(found[echo_distribution], Adapter)

    adapter = build_adapter(echo_distribution, {"PREFIX": "third-party"})
    outbound = outbound_for(sample_bytes[DOCUMENT])
    result = await adapter.deliver(outbound)
    await adapter.aclose()

    assert result.remote_id == f"third-party-{outbound.envelope.message_id}"
    assert getattr(type(adapter), "delivered") == [outbound.envelope.message_id]  # noqa: B009
