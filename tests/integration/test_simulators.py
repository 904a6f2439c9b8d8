"""The axis simulators over real HTTP: credentials and signatures, receipts, refusals, faults, idempotency.

Receipts are read back with plain lxml, not with the code that wrote them.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import hmac
import json
import re
import socket
import sys
import time
from collections.abc import AsyncIterator
from typing import Any

import httpx
import pytest
from lxml import etree

from docbus.connectors.national_axis import NationalAxisClient, NationalAxisError
from docbus.connectors.provincial_axis import ProvincialAxisClient, ProvincialAxisError
from docbus.simulators import SimulatorConfig, SimulatorKind, create_app, serve
from docbus.simulators.common import FORM_FRAMING_BYTES

NS = {"e": "http://www.mic.gov.vn/TBT/QCVN_102_2016"}
DOCUMENT = "edoc_with_attachment_dc0bdef0.edxml"  # G22 to H41, H14, G17
SENDER = "000.00.00.G22"
RECEIVERS = ("000.00.00.H41", "000.00.00.H14", "000.00.00.G17")
CONFIG = SimulatorConfig(receipt_delays=(0.15, 0.2, 0.25))
TIMESTAMP = re.compile(r"\d{4}/\d{2}/\d{2} \d{2}:\d{2}:\d{2}")

AxisClient = NationalAxisClient | ProvincialAxisClient


@pytest.fixture
async def national() -> AsyncIterator[str]:
    async with serve(create_app("national-axis", CONFIG)) as url:
        yield url


@pytest.fixture
async def provincial() -> AsyncIterator[str]:
    async with serve(create_app("provincial-axis", CONFIG)) as url:
        yield url


@pytest.fixture(params=["national-axis", "provincial-axis"])
async def axis(request: pytest.FixtureRequest) -> AsyncIterator[tuple[str, AxisClient]]:
    """Either simulator with a client logged in as docbus."""
    kind: SimulatorKind = request.param
    async with serve(create_app(kind, CONFIG)) as url:
        client_type = NationalAxisClient if kind == "national-axis" else ProvincialAxisClient
        async with client_type(url, "docbus", "docbus-secret", timeout=5) as client:
            yield url, client


async def send(client: AxisClient, packet: bytes, key: str | None = None) -> tuple[str, bool]:
    if isinstance(client, NationalAxisClient):
        sent = await client.send_edoc(packet, "edoc", SENDER, key)
    else:
        sent = await client.send_edoc(packet, "edoc", key)
    return sent.doc_id, sent.duplicate


async def waiting(client: AxisClient) -> list[str]:
    if isinstance(client, NationalAxisClient):
        return [item.doc_id for item in await client.get_received_edoc_list()]
    return [item.doc_id for item in await client.sync_received_edoc_list()]


async def acknowledge(client: AxisClient, doc_id: str, done: bool = True) -> None:
    if isinstance(client, NationalAxisClient):
        await client.update_status(doc_id, "done" if done else "fail")
    else:
        await client.update_status(doc_id, "DONE" if done else "FAIL")


async def receipts_when(client: AxisClient, count: int, timeout: float = 5.0) -> list[tuple[str, bytes]]:
    """(DocId, packet) of the waiting receipts, once there are ``count`` of them."""
    deadline = time.monotonic() + timeout
    while True:
        doc_ids = await waiting(client)
        if len(doc_ids) >= count:
            return [(doc_id, await client.get_edoc(doc_id)) for doc_id in doc_ids]
        assert time.monotonic() < deadline, f"only {len(doc_ids)} of {count} receipts arrived"
        await asyncio.sleep(0.02)


def header_of(packet: bytes) -> etree._Element:
    header = etree.fromstring(packet).find("e:edXMLEnvelope/e:edXMLHeader/e:MessageHeader", NS)
    assert header is not None
    return header


def text(element: etree._Element, path: str) -> str:
    return str(element.findtext(path, namespaces=NS)).strip()


async def faults(url: str, **settings: Any) -> None:
    async with httpx.AsyncClient(base_url=url) as sim:
        response = await (sim.post("/_sim/faults", json=settings) if settings else sim.delete("/_sim/faults"))
        response.raise_for_status()


# ---------------------------------------------------------------------------------------------------------------
# Credentials


async def test_national_axis_checks_the_signature(national: str, sample_bytes: dict[str, bytes]) -> None:
    packet = sample_bytes[DOCUMENT]
    async with NationalAxisClient(national, "docbus", "not-the-secret") as wrong:
        with pytest.raises(NationalAxisError) as caught:
            await wrong.send_edoc(packet, "edoc", SENDER)
    assert (caught.value.http_status, caught.value.error_code, caught.value.retriable) == (401, "15", False)

    async with NationalAxisClient(national, "docbus", "docbus-secret") as right, httpx.AsyncClient() as raw:
        # Signed for one message type, sent as another: the signature no longer covers the headers.
        headers = right.auth_headers({"from": SENDER, "servicetype": "eDoc", "messagetype": "edoc"})
        tampered = await raw.post(f"{national}/sendEdoc", content=packet, headers={**headers, "messagetype": "status"})
        assert tampered.status_code == 401
        assert tampered.json() == {"status": "FAIL", "ErrorCode": "15", "ErrorDesc": "bad signature"}

        # A signature made (correctly) long ago is refused: the timestamp is outside the window.
        old = {"systemid": "docbus", "timestamp": str(int((time.time() - 3600) * 1000))}
        old_signature = hmac.new(
            b"docbus-secret", json.dumps(old, sort_keys=True, separators=(",", ":")).encode(), hashlib.sha256
        ).hexdigest()
        stale = await raw.post(f"{national}/getReceivedEdocList", headers={**old, "signature": old_signature})
        assert stale.status_code == 401

        # The same canonical form, signed now, is accepted: the client and an independent HMAC agree.
        fresh = {"systemid": "docbus", "timestamp": str(int(time.time() * 1000))}
        signature = hmac.new(
            b"docbus-secret", json.dumps(fresh, sort_keys=True, separators=(",", ":")).encode(), hashlib.sha256
        ).hexdigest()
        listed = await raw.post(f"{national}/getReceivedEdocList", headers={**fresh, "signature": signature})
        assert listed.status_code == 200
        assert listed.json()["status"] == "OK"

        unsigned = await raw.post(f"{national}/getReceivedEdocList", headers={"systemid": "docbus"})
        assert unsigned.status_code == 401


async def test_provincial_axis_checks_credentials_and_tokens(provincial: str, sample_bytes: dict[str, bytes]) -> None:
    async with ProvincialAxisClient(provincial, "docbus", "not-the-secret") as wrong:
        with pytest.raises(ProvincialAxisError) as caught:
            await wrong.send_edoc(sample_bytes[DOCUMENT])
    assert (caught.value.error_code, caught.value.retriable) == (15, False)

    async with httpx.AsyncClient(base_url=provincial) as raw:
        no_token = await raw.post("/syncReceivedEdocList", json={})
        assert no_token.status_code == 401
        assert no_token.json()["ErrorCode"] == 15

    async with ProvincialAxisClient(provincial, "docbus", "docbus-secret") as client, httpx.AsyncClient() as raw:
        await client.send_edoc(sample_bytes[DOCUMENT], idempotency_key="before-expiry")
        revoked = (await raw.post(f"{provincial}/_sim/expire-tokens")).json()["revoked"]
        assert revoked == 1
        # The revoked token is answered 401; the client logs in again and the call goes through.
        assert isinstance(await client.sync_received_edoc_list(), list)
        sent = await client.send_edoc(sample_bytes[DOCUMENT], idempotency_key="after-expiry")
        assert sent.duplicate is False


# ---------------------------------------------------------------------------------------------------------------
# Receipts


async def test_receipts_01_03_06_come_from_each_receiver_in_order(
    axis: tuple[str, AxisClient], sample_bytes: dict[str, bytes]
) -> None:
    _, client = axis
    packet = sample_bytes[DOCUMENT]
    original = header_of(packet)

    await send(client, packet, "receipts")
    assert await waiting(client) == []  # nothing is due yet

    receipts = await receipts_when(client, 9)

    by_receiver: dict[str, list[str]] = {}
    for _, receipt in receipts:
        root = etree.fromstring(receipt)
        assert all(element.prefix == "edXML" for element in root.iter()), "every element carries edXML:"
        header = header_of(receipt)
        assert text(header, "e:ResponseFor/e:OrganId") == SENDER
        assert text(header, "e:ResponseFor/e:DocumentId") == text(original, "e:DocumentId")
        assert text(header, "e:ResponseFor/e:Code") == "7816/VPCP-TTĐT"
        assert text(header, "e:ResponseFor/e:PromulgationDate") == text(
            original, "e:PromulgationInfo/e:PromulgationDate"
        )
        assert TIMESTAMP.fullmatch(text(header, "e:Timestamp"))
        assert text(header, "e:Description")
        assert header.find("e:To", NS) is None and root.find("e:edXMLBody", NS) is None
        by_receiver.setdefault(text(header, "e:From/e:OrganId"), []).append(text(header, "e:StatusCode"))
    assert by_receiver == {receiver: ["01", "03", "06"] for receiver in RECEIVERS}

    # Each receiver's name travels with its id, as in the real receipts: the one the document gave it.
    names = {text(to, "e:OrganId"): text(to, "e:OrganName") for to in original.findall("e:To", NS)}
    for _, receipt in receipts:
        header = header_of(receipt)
        assert text(header, "e:From/e:OrganName") == names[text(header, "e:From/e:OrganId")]
    assert len(set(names.values())) == len(RECEIVERS)  # three different names, so a mix-up would show

    # Acknowledged receipts leave the list (done or fail alike); the rest stay until acknowledged.
    await acknowledge(client, receipts[0][0], done=True)
    await acknowledge(client, receipts[1][0], done=False)
    assert await waiting(client) == [doc_id for doc_id, _ in receipts[2:]]


async def test_refuse_with_02_answers_02_with_a_reason(
    axis: tuple[str, AxisClient], sample_bytes: dict[str, bytes]
) -> None:
    url, client = axis
    await faults(url, refuse_with_02=["000.00.00.H14"], refuse_reason="Sai thẩm quyền")
    await send(client, sample_bytes[DOCUMENT], "refused-by-h14")

    receipts = await receipts_when(client, 7)

    codes: dict[str, list[str]] = {}
    for _, receipt in receipts:
        header = header_of(receipt)
        organ = text(header, "e:From/e:OrganId")
        codes.setdefault(organ, []).append(text(header, "e:StatusCode"))
        if organ == "000.00.00.H14":
            assert "Sai thẩm quyền" in text(header, "e:Description")
    assert codes == {"000.00.00.H41": ["01", "03", "06"], "000.00.00.H14": ["02"], "000.00.00.G17": ["01", "03", "06"]}

    for doc_id, _ in receipts:
        await acknowledge(client, doc_id)
    await faults(url, refuse_with_02="*")
    await send(client, sample_bytes[DOCUMENT], "refused-by-all")
    everyone = await receipts_when(client, 3)
    assert sorted(text(header_of(packet), "e:StatusCode") for _, packet in everyone) == ["02", "02", "02"]

    for doc_id, _ in everyone:
        await acknowledge(client, doc_id)
    await faults(url)  # cleared: everyone accepts again
    await send(client, sample_bytes[DOCUMENT], "after-clearing")
    assert {text(header_of(packet), "e:StatusCode") for _, packet in await receipts_when(client, 9)} == {
        "01",
        "03",
        "06",
    }


# ---------------------------------------------------------------------------------------------------------------
# Faults, idempotency, refusals


async def test_faults_apply_to_the_axis_and_clear(axis: tuple[str, AxisClient], sample_bytes: dict[str, bytes]) -> None:
    url, client = axis
    packet = sample_bytes[DOCUMENT]
    error = NationalAxisError if isinstance(client, NationalAxisClient) else ProvincialAxisError

    await faults(url, down=True)
    with pytest.raises(error) as caught:
        await send(client, packet)
    assert (caught.value.http_status, caught.value.retriable) == (503, True)
    async with httpx.AsyncClient(base_url=url) as sim:  # the inspection routes stay up
        assert (await sim.get("/_sim/faults")).json()["down"] is True

    await faults(url, error_rate=1.0)
    with pytest.raises(error) as caught:
        await send(client, packet)
    assert caught.value.http_status == 500 and str(caught.value.error_code) == "20" and caught.value.retriable

    await faults(url, permanent_error_code=22)
    with pytest.raises(error) as caught:
        await send(client, packet)
    assert str(caught.value.error_code) == "22" and not caught.value.retriable

    await faults(url, latency_ms=150)
    started = time.monotonic()
    await send(client, packet, "slow")
    assert time.monotonic() - started >= 0.15

    await faults(url)
    async with httpx.AsyncClient(base_url=url) as sim:
        assert (await sim.get("/_sim/faults")).json() == {
            "latency_ms": 0,
            "error_rate": 0.0,
            "down": False,
            "refuse_with_02": [],
            "refuse_reason": "Không đúng thẩm quyền tiếp nhận (simulated refusal)",
            "permanent_error_code": None,
        }
        bad = await sim.post("/_sim/faults", json={"error_rate": 2})
        assert bad.status_code == 422
    await send(client, packet, "healthy-again")


@pytest.mark.parametrize("kind", ["national-axis", "provincial-axis"])
async def test_operations_are_answered_in_front_of_the_router(
    kind: SimulatorKind, sample_bytes: dict[str, bytes]
) -> None:
    """Every operation is served by the fault injection in front of the app itself: with the ``POST /{operation}``
    route taken out of the app, a client still sends, lists and acknowledges; what is no operation still goes to
    the app (``/login``, ``/_sim``) or is answered 404 by it."""
    app = create_app(kind, CONFIG)
    app.router.routes[:] = [route for route in app.router.routes if getattr(route, "path", "") != "/{operation}"]
    async with serve(app) as url:
        client_type = NationalAxisClient if kind == "national-axis" else ProvincialAxisClient
        async with client_type(url, "docbus", "docbus-secret", timeout=5) as client:  # logs in at /login
            doc_id, duplicate = await send(client, sample_bytes[DOCUMENT], "direct")
            assert not duplicate
            await asyncio.sleep(max(CONFIG.receipt_delays) + 0.05)
            listed = await waiting(client)  # 01, 03 and 06 from each receiver
            assert len(listed) == 3 * len(RECEIVERS)
            await acknowledge(client, listed[0])
            assert len(await waiting(client)) == 3 * len(RECEIVERS) - 1
        async with httpx.AsyncClient(base_url=url) as sim:
            (entry,) = (await sim.get("/_sim/received")).json()["received"]
            assert entry["DocId"] == doc_id
            assert (await sim.post("/noSuchOperation")).status_code == 404


async def test_idempotency_key_gives_the_same_doc_id(
    axis: tuple[str, AxisClient], sample_bytes: dict[str, bytes]
) -> None:
    url, client = axis
    packet = sample_bytes[DOCUMENT]
    first = await send(client, packet, "same-key")
    second = await send(client, packet, "same-key")
    third = await send(client, packet, "same-key")
    other = await send(client, packet, "other-key")
    unkeyed = [await send(client, packet), await send(client, packet)]

    assert first == (first[0], False) and second == third == (first[0], True)
    assert other[0] != first[0] and unkeyed[0][0] != unkeyed[1][0]
    async with httpx.AsyncClient(base_url=url) as sim:
        received = (await sim.get("/_sim/received")).json()["received"]
    assert len(received) == 4
    (entry,) = [entry for entry in received if entry["idempotency_key"] == "same-key"]
    assert entry["DocId"] == first[0]
    assert entry["duplicates"] == 2
    assert entry["sender"] == SENDER and entry["receivers"] == list(RECEIVERS)
    assert entry["messagetype"] == "edoc"
    assert entry["sha256"] == hashlib.sha256(packet).hexdigest()


async def test_packets_that_are_not_edxml_are_refused_for_good(
    axis: tuple[str, AxisClient], sample_bytes: dict[str, bytes]
) -> None:
    _, client = axis
    error = NationalAxisError if isinstance(client, NationalAxisClient) else ProvincialAxisError
    for packet in (sample_bytes["edoc.edxml"], b"<not-edxml/>"):  # the first is not well-formed
        with pytest.raises(error) as caught:
            await send(client, packet)
        assert str(caught.value.error_code) == "22" and not caught.value.retriable


@pytest.mark.parametrize("kind", ["national-axis", "provincial-axis"])
async def test_a_body_over_the_cap_is_refused_and_not_stored(
    kind: SimulatorKind, sample_bytes: dict[str, bytes]
) -> None:
    packet = sample_bytes[DOCUMENT]
    http_status = 200 if kind == "national-axis" else 413  # the national axis refuses in the body of a 200
    oversized = packet + b"<!--" + b"x" * (FORM_FRAMING_BYTES + 1000) + b"-->"  # past the cap and any form framing
    async with serve(create_app(kind, SimulatorConfig(max_body_bytes=len(packet)))) as url:
        client_type = NationalAxisClient if kind == "national-axis" else ProvincialAxisClient
        async with client_type(url, "docbus", "docbus-secret", timeout=5) as client:
            with pytest.raises((NationalAxisError, ProvincialAxisError)) as caught:
                await send(client, oversized)  # Content-Length over the cap
            assert (caught.value.http_status, str(caught.value.error_code)) == (http_status, "21")
            assert "too large" in caught.value.reason
            if isinstance(client, NationalAxisClient):  # no Content-Length: cut while streaming

                async def chunks() -> AsyncIterator[bytes]:
                    for start in range(0, len(oversized), 1000):
                        yield oversized[start : start + 1000]

                signed = {"from": SENDER, "servicetype": "eDoc", "messagetype": "edoc"}
                async with httpx.AsyncClient(base_url=url) as plain:
                    streamed = await plain.post("/sendEdoc", headers=client.auth_headers(signed), content=chunks())
                assert "content-length" not in streamed.request.headers
                assert streamed.json()["ErrorCode"] == "21" and "too large" in streamed.json()["ErrorDesc"]
            doc_id, _ = await send(client, packet)  # exactly the cap is taken
        async with httpx.AsyncClient(base_url=url) as sim:
            received = (await sim.get("/_sim/received")).json()["received"]
    assert [entry["DocId"] for entry in received] == [doc_id]


async def test_status_messages_sent_to_the_axis_get_no_receipts(national: str, sample_bytes: dict[str, bytes]) -> None:
    async with NationalAxisClient(national, "docbus", "docbus-secret") as client:
        sent = await client.send_edoc(sample_bytes["status_acceptance_03.edxml"], "status", "000.00.00.H41", "st")
        with pytest.raises(NationalAxisError) as caught:  # declared type and content disagree
            await client.send_edoc(sample_bytes["status_acceptance_03.edxml"], "edoc", "000.00.00.H41")
        assert caught.value.error_code == "22"
        with pytest.raises(NationalAxisError) as caught:  # declared sender is not the packet's From
            await client.send_edoc(sample_bytes[DOCUMENT], "edoc", "000.00.00.H41")
        assert caught.value.error_code == "10"
        await asyncio.sleep(0.3)
        assert await client.get_received_edoc_list() == []
        (entry,) = await client.get_sent_edoc_list()
        assert (entry.doc_id, entry.messagetype) == (sent.doc_id, "status")


# ---------------------------------------------------------------------------------------------------------------
# The command entry point


async def test_the_command_entry_serves_a_simulator(sample_bytes: dict[str, bytes]) -> None:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    argv = ["provincial-axis", "--port", str(port), "--secret", "cli-secret", "--log-level", "warning"]
    code = f"import sys; from docbus.simulators import main; sys.exit(main({argv!r}))"
    process = await asyncio.create_subprocess_exec(
        sys.executable, "-c", code, stdout=asyncio.subprocess.DEVNULL, stderr=asyncio.subprocess.DEVNULL
    )
    try:
        url = f"http://127.0.0.1:{port}"
        async with httpx.AsyncClient(base_url=url, timeout=2) as raw:
            for _ in range(500):
                with contextlib.suppress(httpx.TransportError):
                    if (await raw.get("/_sim/faults")).status_code == 200:
                        break
                await asyncio.sleep(0.02)
        async with ProvincialAxisClient(url, "docbus", "cli-secret") as client:
            sent = await client.send_edoc(sample_bytes[DOCUMENT], idempotency_key="cli")
        assert sent.doc_id and not sent.duplicate
    finally:
        process.terminate()
        await process.wait()
