"""The intake API end to end over real HTTP: every sample packet, receipts, timelines, schemas, the sandbox."""

from __future__ import annotations

import asyncio
import hashlib
from typing import Any

import orjson
import pytest

from docbus.signing import verify_jws
from docbus.store.agencies import Role

from ..conftest import RunningGateway
from .helpers import header_text, row_counts, sender_of

VALID_SAMPLES = [
    "edoc_new.edxml",
    "edoc_replacement.edxml",
    "edoc_revocation.edxml",
    "edoc_update.edxml",
    "edoc_with_attachment_dc0bdef0.edxml",
    "status.edxml",
    "status_acceptance_03.edxml",
    "status_assignment_04.edxml",
    "status_cancellation_13.edxml",
    "status_change-acceptance_15.edxml",
    "status_change-rejection_16.edxml",
    "status_finish_06.edxml",
    "status_inbox__01.edxml",
    "status_processing_05.edxml",
    "status_rejection_02.edxml",
]


async def test_every_valid_sample_is_accepted_with_a_verifiable_receipt(
    gateway: RunningGateway, sample_bytes: dict[str, bytes]
) -> None:
    async with gateway.client() as anonymous:
        jwks = (await anonymous.get("/v1/keys")).json()
    for name in VALID_SAMPLES:
        packet = sample_bytes[name]
        sender = sender_of(packet)
        if sender not in gateway.keys:
            await gateway.register(sender)
        async with gateway.client(sender) as client:
            response = await client.post("/v1/messages", content=packet, headers={"Content-Type": "application/xml"})
            assert response.status_code == 202, (name, response.text)
            receipt = response.json()
            is_status = name.startswith("status")
            assert receipt["kind"] == ("status" if is_status else "edoc"), name
            assert receipt["sender"] == sender
            assert receipt["sha256"] == hashlib.sha256(packet).hexdigest()
            assert receipt["size"] == len(packet)
            if is_status:
                assert receipt["receivers"] == [header_text(packet, "e:ResponseFor/e:OrganId")]
            else:
                assert receipt["business_id"] == header_text(packet, "e:DocumentId")
                assert receipt["receivers"][0] == header_text(packet, "e:To/e:OrganId")
            if is_status:
                assert "xml_signature" not in receipt
            else:  # these senders put their Signature in the edXML namespace: recorded, not refused (the default)
                assert receipt["xml_signature"]["reason"] == "not-xmldsig", name
            signed = verify_jws(receipt["signature"], jwks)
            assert signed == {k: v for k, v in receipt.items() if k != "signature"}
            assert response.headers["location"] == f"/v1/messages/{receipt['message_id']}"

            detail = (await client.get(response.headers["location"])).json()
            # The relay may already have published it (embedded broker): ACCEPTED first, nothing else yet.
            types = [e["type"] for e in detail["events"]]
            assert types[0] == "ACCEPTED"
            assert set(types) <= {"ACCEPTED", "PUBLISHED"}
            assert detail["status"] == types[-1]
            assert detail["events"][0]["actor"] == sender
            payload = await client.get(f"/v1/messages/{receipt['message_id']}/payload")
            assert payload.content == packet
    counts = await row_counts(gateway.db)
    assert counts == {"messages": 15, "payloads": 15, "events": 15, "outbox": 15}


async def test_not_well_formed_sample_is_refused_with_its_line(
    gateway: RunningGateway, sample_bytes: dict[str, bytes]
) -> None:
    await gateway.register("000.00.00.G22")
    async with gateway.client("000.00.00.G22") as client:
        response = await client.post(
            "/v1/messages", content=sample_bytes["edoc.edxml"], headers={"Content-Type": "application/xml"}
        )
    assert response.status_code == 400
    assert response.headers["content-type"] == "application/problem+json"
    problem = response.json()
    assert problem["type"].endswith("/not-well-formed")
    assert problem["status"] == 400
    assert problem["errors"][0]["line"] >= 1
    assert problem["errors"][0]["message_vi"]
    assert (await row_counts(gateway.db))["messages"] == 0


async def test_validate_sandbox_reports_and_stores_nothing(
    gateway: RunningGateway, sample_bytes: dict[str, bytes]
) -> None:
    await gateway.register("000.00.00.G22")
    packet = sample_bytes["edoc_with_attachment_dc0bdef0.edxml"]
    async with gateway.client("000.00.00.G22") as client:
        ok = await client.post("/v1/validate", content=packet, headers={"Content-Type": "application/xml"})
        assert ok.status_code == 200
        assert ok.json()["valid"] is True
        assert ok.json()["business_id"] == header_text(packet, "e:DocumentId")
        broken = packet.replace(b"<edXML:Subject>", b"<edXML:Subjekt>").replace(
            b"</edXML:Subject>", b"</edXML:Subjekt>"
        )
        bad = await client.post("/v1/validate", content=broken, headers={"Content-Type": "application/xml"})
    assert bad.status_code == 422
    errors = bad.json()["errors"]
    assert errors and all("line" in e and e["message_en"] and e["message_vi"] for e in errors)
    assert (await row_counts(gateway.db))["messages"] == 0


async def test_schemas_are_listed_and_downloadable(gateway: RunningGateway) -> None:
    async with gateway.client() as client:
        listing = (await client.get("/v1/schemas")).json()["items"]
        kinds = {item["kind"] for item in listing}
        assert {"edoc", "status", "dossier", "dossier-progress"} <= kinds
        for item in listing:
            assert item["id"] and item["version"]
            source = await client.get(item["href"])
            assert source.status_code == 200
            assert hashlib.sha256(source.content).hexdigest() == item["sha256"]
        missing = await client.get("/v1/schemas/qcvn102.edoc/0.0")
        assert missing.status_code == 404
        assert missing.headers["content-type"] == "application/problem+json"


async def test_openapi_is_served(gateway: RunningGateway) -> None:
    async with gateway.client() as client:
        assert (await client.get("/docs")).status_code == 200
        spec = (await client.get("/openapi.json")).json()
    assert "/v1/messages" in spec["paths"]
    assert "/v1/validate" in spec["paths"]


async def test_operator_sees_all_and_agencies_only_their_own(
    gateway: RunningGateway, sample_bytes: dict[str, bytes]
) -> None:
    await gateway.register("000.00.00.G22")
    await gateway.register("000.00.00.H37")
    await gateway.register("000.00.00.G01", role=Role.OPERATOR)
    packet = sample_bytes["edoc_with_attachment_dc0bdef0.edxml"]
    async with gateway.client("000.00.00.G22") as sender:
        receipt = (
            await sender.post("/v1/messages", content=packet, headers={"Content-Type": "application/xml"})
        ).json()
    location = f"/v1/messages/{receipt['message_id']}"
    async with gateway.client("000.00.00.H37") as stranger:
        hidden = await stranger.get(location)
        assert hidden.status_code == 404
        assert (await stranger.get(location + "/payload")).status_code == 404
        assert (await stranger.get("/v1/messages")).json()["items"] == []
    async with gateway.client("000.00.00.G01") as operator:
        seen = await operator.get(location)
        assert seen.status_code == 200
        listed = (await operator.get("/v1/messages", params={"business_id": receipt["business_id"]})).json()
        assert [m["message_id"] for m in listed["items"]] == [receipt["message_id"]]
        refused = await operator.post("/v1/messages", content=packet, headers={"Content-Type": "application/xml"})
        assert refused.status_code == 403


async def test_search_refuses_filters_that_could_only_match_nothing(
    gateway: RunningGateway, sample_bytes: dict[str, bytes]
) -> None:
    await gateway.register("000.00.00.G22")
    packet = sample_bytes["edoc_with_attachment_dc0bdef0.edxml"]
    async with gateway.client("000.00.00.G22") as sender:
        first = (await sender.post("/v1/messages", content=packet, headers={"Content-Type": "application/xml"})).json()
        second = await sender.post(
            "/v1/messages", content=packet, headers={"Content-Type": "application/xml", "Idempotency-Key": "k-2"}
        )
        newest = second.json()["message_id"]
        for params, path in [
            ({"status": "DELIVERD"}, "/query/status"),
            ({"kind": "document"}, "/query/kind"),
            ({"before": "not-a-message-id"}, "/query/before"),
            ({"before": first["message_id"].lower()}, "/query/before"),
        ]:
            refused = await sender.get("/v1/messages", params=params)
            assert refused.status_code == 400, params
            assert refused.headers["content-type"].startswith("application/problem+json")
            assert [e["path"] for e in refused.json()["errors"]] == [path]
        listed = await sender.get("/v1/messages", params={"status": "DELIVERD"})
        assert "ACCEPTED" in listed.json()["errors"][0]["message_en"]  # the answer lists what is expected

        def ids(answer: Any) -> list[str]:
            return [m["message_id"] for m in answer.json()["items"]]

        both = [newest, first["message_id"]]
        for _ in range(200):  # with nowhere to forward, PUBLISHED is where both end, within moments
            statuses = {(await sender.get(f"/v1/messages/{m}")).json()["status"] for m in both}
            if statuses == {"PUBLISHED"}:
                break
            await asyncio.sleep(0.05)
        assert statuses == {"PUBLISHED"}
        assert ids(await sender.get("/v1/messages", params={"status": "published", "kind": "edoc"})) == both
        assert ids(await sender.get("/v1/messages", params={"status": "PUBLISHED"})) == both
        assert ids(await sender.get("/v1/messages", params={"status": "accepted"})) == []
        assert ids(await sender.get("/v1/messages", params={"kind": "dossier"})) == []
        assert ids(await sender.get("/v1/messages", params={"before": newest})) == [first["message_id"]]


async def test_receipt_endpoint_returns_the_exact_bytes(
    gateway: RunningGateway, sample_bytes: dict[str, bytes]
) -> None:
    await gateway.register("000.00.00.H41")
    async with gateway.client("000.00.00.H41") as client:
        first = await client.post(
            "/v1/messages",
            content=sample_bytes["status_finish_06.edxml"],
            headers={"Content-Type": "text/xml"},
        )
        again = await client.get(f"/v1/messages/{first.json()['message_id']}/receipt")
    assert again.content == first.content
    assert orjson.loads(again.content)["kind"] == "status"


@pytest.mark.parametrize("path", ["/healthz", "/readyz"])
async def test_health_endpoints(gateway: RunningGateway, path: str) -> None:
    async with gateway.client() as client:
        response = await client.get(path)
    assert response.status_code == 200
