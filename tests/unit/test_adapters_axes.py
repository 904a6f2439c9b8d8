"""The axis clients and adapters against scripted answers: signing, login, error mapping, receipts bookkeeping."""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any

import httpx
import pytest
from pydantic import ValidationError

from docbus.adapters.base import Outbound, PermanentDeliveryError, RetriableDeliveryError
from docbus.adapters.national_axis import NationalAxisAdapter, NationalAxisSettings
from docbus.adapters.provincial_axis import ProvincialAxisAdapter, ProvincialAxisSettings
from docbus.connectors.national_axis import NationalAxisClient, NationalAxisError, canonical_headers
from docbus.connectors.provincial_axis import ProvincialAxisClient, ProvincialAxisError
from docbus.connectors.transport import MAX_RESPONSE_BYTES
from docbus.envelope import Envelope, MessageKind, SchemaRef

URL = "http://127.0.0.1:9"
PACKET = "<edXML>công văn</edXML>".encode()
Answer = Callable[[httpx.Request], httpx.Response]


def outbound(kind: MessageKind = MessageKind.EDOC) -> Outbound:
    envelope = Envelope(
        message_id="01JDOCBUSAXES0000000000001",
        kind=kind,
        schema=SchemaRef(f"qcvn102.{kind.value}", "2016.1"),
        sender="000.00.00.G22",
        receivers=("000.00.00.H41",),
        business_id="doc-1",
        sha256=hashlib.sha256(PACKET).hexdigest(),
        size=len(PACKET),
        received_at=datetime.now(UTC),
        content_type="application/xml",
        idempotency_key=None,
        trace_id="0" * 32,
    )
    return Outbound(envelope, PACKET, destination="axis", receivers=envelope.receivers)


def national(answer: Answer) -> NationalAxisClient:
    return NationalAxisClient(URL, "docbus", "s3cret", transport=httpx.MockTransport(answer))


def ok(**fields: Any) -> httpx.Response:
    return httpx.Response(200, json={"status": "OK", "ErrorCode": "0", "ErrorDesc": "", **fields})


# ---------------------------------------------------------------------------------------------------------------
# National axis client


def test_the_canonical_form_is_sorted_compact_utf8_json() -> None:
    headers = {
        "timestamp": "1764200000000",
        "systemid": "docbus",
        "messagetype": "edoc",
        "servicetype": "eDoc",
        "from": "000.00.00.G22",
    }
    assert canonical_headers(headers) == (
        b'{"from":"000.00.00.G22","messagetype":"edoc","servicetype":"eDoc",'
        b'"systemid":"docbus","timestamp":"1764200000000"}'
    )
    assert canonical_headers({"systemid": "Sở"}) == '{"systemid":"Sở"}'.encode()


@pytest.mark.parametrize(
    "value",
    ["Sở Nội vụ", 'quote " and \\ back', "tab\tnew\nline\x01\x1f", "\u2028\u2029 and \U0001f600", "</script>", ""],
)
def test_the_canonical_form_is_what_the_standard_json_module_writes(value: str) -> None:
    """Whoever checks a signature may build the canonical form with Python's own ``json``: the bytes must agree."""
    headers = {"SystemId": "docbus", "Timestamp": "1764200000000", "from": value}
    expected = json.dumps(
        {k.lower(): v for k, v in headers.items()}, sort_keys=True, separators=(",", ":"), ensure_ascii=False
    ).encode("utf-8")
    assert canonical_headers(headers) == expected


async def test_send_edoc_posts_the_raw_packet_with_signed_headers() -> None:
    seen: list[httpx.Request] = []

    def answer(request: httpx.Request) -> httpx.Response:
        seen.append(request)
        return ok(DocId="D-1")

    async with national(answer) as client:
        sent = await client.send_edoc(PACKET, "status", "000.00.00.H41", "key-1")

    (request,) = seen
    assert str(request.url) == f"{URL}/sendEdoc"
    assert request.content == PACKET
    headers = request.headers
    assert headers["idempotency-key"] == "key-1"
    signed = {name: headers[name] for name in ("systemid", "timestamp", "from", "servicetype", "messagetype")}
    assert signed["systemid"] == "docbus" and signed["servicetype"] == "eDoc" and signed["messagetype"] == "status"
    canonical = json.dumps(signed, sort_keys=True, separators=(",", ":")).encode()
    assert headers["signature"] == hmac.new(b"s3cret", canonical, hashlib.sha256).hexdigest()
    assert (sent.doc_id, sent.duplicate) == ("D-1", False)


async def test_get_edoc_decodes_base64_and_update_status_names_the_doc() -> None:
    bodies: list[dict[str, Any]] = []

    def answer(request: httpx.Request) -> httpx.Response:
        bodies.append(json.loads(request.content))
        if request.url.path == "/getEdoc":
            return ok(data={"DocId": "R-1", "content": base64.b64encode(PACKET).decode()})
        return ok()

    async with national(answer) as client:
        assert await client.get_edoc("R-1") == PACKET
        await client.update_status("R-1", "fail")
    assert bodies == [{"DocId": "R-1"}, {"DocId": "R-1", "status": "fail"}]


@pytest.mark.parametrize(
    ("response", "retriable", "code"),
    [
        (httpx.Response(200, json={"status": "FAIL", "ErrorCode": "22", "ErrorDesc": "bad edXML"}), False, "22"),
        (httpx.Response(200, json={"status": "FAIL", "ErrorCode": "18"}), False, "18"),
        (httpx.Response(200, json={"status": "FAIL", "ErrorCode": "23"}), False, "23"),
        (httpx.Response(200, json={"status": "FAIL", "ErrorCode": "20"}), True, "20"),
        (httpx.Response(200, json={"status": "FAIL", "ErrorCode": "99"}), True, "99"),
        (httpx.Response(400, json={"status": "FAIL", "ErrorCode": "99"}), False, "99"),
        (httpx.Response(401, json={"status": "FAIL", "ErrorCode": "15"}), False, "15"),
        (httpx.Response(404, text="not here"), False, None),
        (httpx.Response(408, text=""), True, None),
        (httpx.Response(429, text="slow down"), True, None),
        (httpx.Response(500, text="<html>oops</html>"), True, None),
        (httpx.Response(503, json={"status": "FAIL", "ErrorCode": "22"}), True, "22"),
        (httpx.Response(200, text="not json"), True, None),
        (httpx.Response(200, json={"status": "OK", "ErrorCode": "0"}), True, "0"),  # no DocId
    ],
)
async def test_national_answers_map_to_retriable_or_permanent(
    response: httpx.Response, retriable: bool, code: str | None
) -> None:
    async with national(lambda request: response) as client:
        with pytest.raises(NationalAxisError) as caught:
            await client.send_edoc(PACKET, "edoc", "000.00.00.G22")
    assert caught.value.retriable is retriable
    assert caught.value.error_code == (None if code == "0" else code)


@pytest.mark.parametrize(
    "failure", [httpx.ConnectError("refused"), httpx.ReadTimeout("slow"), httpx.RemoteProtocolError("x")]
)
async def test_national_transport_failures_are_retriable(failure: Exception) -> None:
    def answer(request: httpx.Request) -> httpx.Response:
        raise failure

    async with national(answer) as client:
        with pytest.raises(NationalAxisError) as caught:
            await client.get_received_edoc_list()
    assert caught.value.retriable is True and caught.value.http_status is None


# ---------------------------------------------------------------------------------------------------------------
# Provincial axis client


class ScriptedLgsp:
    """An LGSP answering from a script: counts logins, refuses tokens it was told to refuse."""

    def __init__(self, *, expires_in: float = 3600, refuse_tokens: int = 0, bad_login: bool = False) -> None:
        self.logins = 0
        self.expires_in = expires_in
        self.refuse_tokens = refuse_tokens  # how many calls with a valid-looking token get 401 first
        self.bad_login = bad_login
        self.calls: list[httpx.Request] = []

    def __call__(self, request: httpx.Request) -> httpx.Response:
        self.calls.append(request)
        if request.url.path == "/login":
            self.logins += 1
            if self.bad_login or json.loads(request.content) != {"systemId": "docbus", "secret": "s3cret"}:
                return httpx.Response(401, json={"status": "FAIL", "ErrorCode": 15, "ErrorDesc": "bad credentials"})
            return httpx.Response(
                200, json={"status": "OK", "ErrorCode": 0, "token": f"t{self.logins}", "expiresIn": self.expires_in}
            )
        if request.headers.get("authorization") != f"Bearer t{self.logins}" or self.refuse_tokens:
            self.refuse_tokens = max(0, self.refuse_tokens - 1)
            return httpx.Response(401, json={"status": "FAIL", "ErrorCode": 15, "ErrorDesc": "token expired"})
        return httpx.Response(200, json={"status": "OK", "ErrorCode": 0, "docId": "P-1", "data": []})

    def client(self) -> ProvincialAxisClient:
        return ProvincialAxisClient(URL, "docbus", "s3cret", transport=httpx.MockTransport(self))


async def test_logs_in_once_and_reuses_the_token() -> None:
    lgsp = ScriptedLgsp()
    async with lgsp.client() as client:
        await client.send_edoc(PACKET, idempotency_key="k")
        await client.sync_received_edoc_list()
    assert lgsp.logins == 1
    upload = lgsp.calls[1]
    assert upload.headers["idempotency-key"] == "k"
    assert upload.headers["content-type"].startswith("multipart/form-data")
    assert b'name="edocFile"' in upload.content and PACKET in upload.content
    assert b'name="messagetype"' in upload.content


async def test_a_refused_token_means_one_fresh_login() -> None:
    lgsp = ScriptedLgsp(refuse_tokens=1)
    async with lgsp.client() as client:
        sent = await client.send_edoc(PACKET)
    assert sent.doc_id == "P-1"
    assert lgsp.logins == 2


async def test_bad_credentials_after_a_fresh_login_are_permanent() -> None:
    lgsp = ScriptedLgsp(refuse_tokens=10)
    async with lgsp.client() as client:
        with pytest.raises(ProvincialAxisError) as caught:
            await client.send_edoc(PACKET)
    assert (caught.value.error_code, caught.value.retriable) == (15, False)
    assert lgsp.logins == 2


async def test_a_refused_login_is_permanent_at_once() -> None:
    lgsp = ScriptedLgsp(bad_login=True)
    async with lgsp.client() as client:
        with pytest.raises(ProvincialAxisError) as caught:
            await client.sync_received_edoc_list()
    assert (caught.value.operation, caught.value.error_code, caught.value.retriable) == ("login", 15, False)
    assert lgsp.logins == 1


async def test_an_expiring_token_is_renewed_before_use() -> None:
    lgsp = ScriptedLgsp(expires_in=0)
    async with lgsp.client() as client:
        await client.sync_received_edoc_list()
        await client.sync_received_edoc_list()
    assert lgsp.logins == 2


@pytest.mark.parametrize(
    ("status", "code", "retriable"),
    [
        *((400, code, False) for code in (10, 18, 19, 21, 23)),
        (200, 22, False),
        (200, 20, True),
        (500, 20, True),
        (502, None, True),
        (429, None, True),
        (403, None, False),
    ],
)
async def test_provincial_codes_map_to_retriable_or_permanent(status: int, code: int | None, retriable: bool) -> None:
    def answer(request: httpx.Request) -> httpx.Response:
        if request.url.path == "/login":
            return httpx.Response(200, json={"status": "OK", "ErrorCode": 0, "token": "t", "expiresIn": 60})
        body = {"status": "FAIL", "ErrorCode": code, "ErrorDesc": "no"} if code is not None else None
        return httpx.Response(status, json=body) if body else httpx.Response(status, text="upstream")

    async with ProvincialAxisClient(URL, "docbus", "s3cret", transport=httpx.MockTransport(answer)) as client:
        with pytest.raises(ProvincialAxisError) as caught:
            await client.send_edoc(PACKET)
    assert (caught.value.error_code, caught.value.retriable) == (code, retriable)


# ---------------------------------------------------------------------------------------------------------------
# Adapters over the clients


def national_adapter(answer: Answer) -> NationalAxisAdapter:
    settings = NationalAxisSettings.model_validate({"url": URL, "system_id": "docbus", "secret": "s3cret"})
    return NationalAxisAdapter(settings, client=national(answer))


async def test_national_adapter_sends_status_messages_as_status() -> None:
    seen: list[httpx.Request] = []

    def answer(request: httpx.Request) -> httpx.Response:
        seen.append(request)
        return ok(DocId="D-9", Duplicate=True)

    adapter = national_adapter(answer)
    edoc = await adapter.deliver(outbound(MessageKind.EDOC))
    status = await adapter.deliver(outbound(MessageKind.STATUS))
    await adapter.aclose()

    assert [r.headers["messagetype"] for r in seen] == ["edoc", "status"]
    assert all(r.headers["idempotency-key"] == "01JDOCBUSAXES0000000000001" for r in seen)
    assert all(r.headers["from"] == "000.00.00.G22" for r in seen)
    assert (edoc.remote_id, edoc.duplicate, status.remote_id) == ("D-9", True, "D-9")


@pytest.mark.parametrize("adapter_type", [NationalAxisAdapter, ProvincialAxisAdapter])
async def test_axis_adapters_refuse_dossiers_for_good(adapter_type: type[NationalAxisAdapter]) -> None:
    adapter = adapter_type.from_config({"url": URL, "system_id": "docbus", "secret": "s3cret"})
    with pytest.raises(PermanentDeliveryError, match="edXML only"):
        await adapter.deliver(outbound(MessageKind.DOSSIER))
    await adapter.aclose()


@pytest.mark.parametrize("adapter_type", [NationalAxisAdapter, ProvincialAxisAdapter])
async def test_axis_adapters_hold_answers_to_their_configured_cap(adapter_type: type[NationalAxisAdapter]) -> None:
    default = adapter_type.from_config({"url": URL, "system_id": "docbus", "secret": "s3cret"})
    tight = adapter_type.from_config(
        {"url": URL, "system_id": "docbus", "secret": "s3cret", "max_response_bytes": 4096}
    )
    caps = [adapter.client._direct.max_response_bytes for adapter in (default, tight) if adapter.client._direct]
    for adapter in (default, tight):
        await adapter.aclose()
    assert caps == [MAX_RESPONSE_BYTES, 4096]
    with pytest.raises(ValidationError):
        adapter_type.from_config({"url": URL, "system_id": "docbus", "secret": "s3cret", "max_response_bytes": 0})


async def test_national_adapter_maps_client_errors() -> None:
    answers = iter(
        [
            httpx.Response(503, text="down"),
            httpx.Response(200, json={"status": "FAIL", "ErrorCode": "18", "ErrorDesc": "unknown recipient"}),
        ]
    )
    adapter = national_adapter(lambda request: next(answers))
    with pytest.raises(RetriableDeliveryError) as retriable:
        await adapter.deliver(outbound())
    with pytest.raises(PermanentDeliveryError) as permanent:
        await adapter.deliver(outbound())
    await adapter.aclose()
    assert retriable.value.status_code == 503
    assert (permanent.value.remote_code, permanent.value.status_code) == ("18", 200)
    assert "unknown recipient" in permanent.value.reason


async def test_receipts_are_fetched_and_acknowledged_by_doc_id() -> None:
    receipt_a, receipt_b = b"<edXML>01</edXML>", b"<edXML>03</edXML>"
    acknowledged: list[dict[str, Any]] = []

    def answer(request: httpx.Request) -> httpx.Response:
        operation = request.url.path.strip("/")
        if operation == "getReceivedEdocList":
            return ok(
                data=[
                    {"DocId": "S-1", "messagetype": "status", "from": "000.00.00.H41"},
                    {"DocId": "E-1", "messagetype": "edoc", "from": "000.00.00.H41"},
                    {"DocId": "S-2", "messagetype": "status", "from": "000.00.00.H14"},
                ]
            )
        if operation == "getEdoc":
            doc_id = json.loads(request.content)["DocId"]
            assert doc_id != "E-1", "documents are not fetched as receipts"
            packet = receipt_a if doc_id == "S-1" else receipt_b
            return ok(data={"DocId": doc_id, "content": base64.b64encode(packet).decode()})
        acknowledged.append(json.loads(request.content))
        return ok()

    adapter = national_adapter(answer)
    assert await adapter.fetch_receipts() == [receipt_a, receipt_b]
    await adapter.acknowledge_receipt(receipt_b, ok=False)
    await adapter.acknowledge_receipt(receipt_a, ok=True)
    await adapter.acknowledge_receipt(receipt_a, ok=True)  # already acknowledged: nothing to do
    await adapter.acknowledge_receipt(b"<never-fetched/>", ok=True)
    await adapter.aclose()

    assert acknowledged == [{"DocId": "S-2", "status": "fail"}, {"DocId": "S-1", "status": "done"}]


async def test_provincial_adapter_acknowledges_with_lgsp_statuses() -> None:
    acknowledged: list[dict[str, Any]] = []
    receipt = b"<edXML>06</edXML>"

    def answer(request: httpx.Request) -> httpx.Response:
        operation = request.url.path.strip("/")
        if operation == "login":
            return httpx.Response(200, json={"status": "OK", "ErrorCode": 0, "token": "t", "expiresIn": 60})
        if operation == "syncReceivedEdocList":
            return httpx.Response(
                200, json={"status": "OK", "ErrorCode": 0, "data": [{"docId": "L-1", "messagetype": "status"}]}
            )
        if operation == "getEdoc":
            content = base64.b64encode(receipt).decode()
            return httpx.Response(200, json={"status": "OK", "ErrorCode": 0, "data": {"content": content}})
        acknowledged.append(json.loads(request.content))
        return httpx.Response(200, json={"status": "OK", "ErrorCode": 0})

    settings = ProvincialAxisSettings.model_validate({"url": URL, "system_id": "docbus", "secret": "s3cret"})
    client = ProvincialAxisClient(URL, "docbus", "s3cret", transport=httpx.MockTransport(answer))
    adapter = ProvincialAxisAdapter(settings, client=client)
    assert await adapter.fetch_receipts() == [receipt]
    await adapter.acknowledge_receipt(receipt, ok=True)
    await adapter.aclose()
    await adapter.aclose()
    assert acknowledged == [{"docId": "L-1", "status": "DONE"}]
