"""Who may submit (401/403), and exactly one message per submission identity (replays, 409, races)."""

from __future__ import annotations

import asyncio
from datetime import timedelta

import pytest

from docbus.errors import ValidationFailed
from docbus.store.agencies import Role

from ..conftest import RunningGateway
from .helpers import row_counts, with_unique_document_id

XML = {"Content-Type": "application/xml"}
DOC = "edoc_with_attachment_dc0bdef0.edxml"


async def test_missing_and_unknown_keys_are_401(gateway: RunningGateway, sample_bytes: dict[str, bytes]) -> None:
    async with gateway.client() as client:
        missing = await client.post("/v1/messages", content=sample_bytes[DOC], headers=XML)
        unknown = await client.post(
            "/v1/messages", content=sample_bytes[DOC], headers={**XML, "Authorization": "Bearer dbk_nope"}
        )
        basic = await client.post(
            "/v1/messages", content=sample_bytes[DOC], headers={**XML, "Authorization": "Basic Zm9vOmJhcg=="}
        )
        unauth_read = await client.get("/v1/messages")
    for response in (missing, unknown, basic, unauth_read):
        assert response.status_code == 401
        assert response.headers["content-type"] == "application/problem+json"
        assert response.headers["www-authenticate"].startswith("Bearer")
        assert response.json()["type"].endswith("/unauthenticated")
    assert (await row_counts(gateway.db))["messages"] == 0


async def test_sending_as_another_agency_is_403_and_stores_nothing(
    gateway: RunningGateway, sample_bytes: dict[str, bytes]
) -> None:
    await gateway.register("000.00.00.H41")
    async with gateway.client("000.00.00.H41") as impostor:
        response = await impostor.post("/v1/messages", content=sample_bytes[DOC], headers=XML)
    assert response.status_code == 403
    assert "000.00.00.G22" in response.json()["detail"]
    assert (await row_counts(gateway.db))["messages"] == 0


async def test_axis_may_post_receipts_only_for_documents_sent_through_the_bus(
    gateway: RunningGateway, sample_bytes: dict[str, bytes]
) -> None:
    await gateway.register("000.00.00.G14", role=Role.AXIS)
    receipt = sample_bytes["status_acceptance_03.edxml"]  # from H41, answering a G22 document
    async with gateway.client("000.00.00.G14") as axis:
        document = await axis.post("/v1/messages", content=sample_bytes[DOC], headers=XML)
        premature = await axis.post("/v1/messages", content=receipt, headers=XML)
        assert document.status_code == 403
        assert premature.status_code == 403
        assert "sent" in premature.json()["detail"]
        await gateway.register("000.00.00.G22")
        async with gateway.client("000.00.00.G22") as sender:
            sent = await sender.post("/v1/messages", content=sample_bytes[DOC], headers=XML)
        assert sent.status_code == 202
        answered = await axis.post("/v1/messages", content=receipt, headers=XML)
    assert answered.status_code == 202
    assert answered.json()["kind"] == "status"
    assert answered.json()["sender"] == "000.00.00.H41"


async def test_rotated_key_replaces_the_old_one(gateway: RunningGateway, sample_bytes: dict[str, bytes]) -> None:
    old = await gateway.register("000.00.00.G22")
    new = await gateway.directory.rotate_key("000.00.00.G22")
    async with gateway.client() as client:
        stale = await client.get("/v1/messages", headers={"Authorization": f"Bearer {old}"})
        fresh = await client.get("/v1/messages", headers={"Authorization": f"Bearer {new}"})
    assert stale.status_code == 401
    assert fresh.status_code == 200


async def test_a_suspended_agency_gets_403_with_the_reason_and_stores_nothing(
    gateway: RunningGateway, sample_bytes: dict[str, bytes]
) -> None:
    await gateway.register("000.00.00.G22")
    await gateway.directory.suspend(
        "000.00.00.G22", "system floods the bus; call the provincial data centre", by="H41.01"
    )
    before = await row_counts(gateway.db)
    async with gateway.client("000.00.00.G22") as client:
        refused = await client.post("/v1/messages", content=with_unique_document_id(sample_bytes[DOC]), headers=XML)
        listing = await client.get("/v1/messages")
    assert refused.status_code == 403 and listing.status_code == 403
    assert refused.headers["content-type"] == "application/problem+json"
    assert "call the provincial data centre" in refused.json()["detail"]
    assert await row_counts(gateway.db) == before
    await gateway.directory.resume("000.00.00.G22")
    await asyncio.sleep(gateway.settings.credential_cache_seconds + 0.2)  # the gateway's cache of the verdict
    async with gateway.client("000.00.00.G22") as client:
        sent = await client.post("/v1/messages", content=with_unique_document_id(sample_bytes[DOC]), headers=XML)
    assert sent.status_code == 202


async def test_a_key_bound_to_a_client_certificate_is_refused_over_plain_http_and_stores_nothing(
    gateway: RunningGateway, sample_bytes: dict[str, bytes]
) -> None:
    """Where no certificate can be shown (plain HTTP, or TLS ended by a proxy) a bound key is refused: the binding
    fails closed. Over mutual TLS see ``test_gateway_https``."""
    await gateway.register("000.00.00.G22")
    with pytest.raises(ValidationFailed, match="64 hexadecimal digits"):
        await gateway.directory.bind_certificate("000.00.00.G22", "not-a-fingerprint")
    with pytest.raises(ValidationFailed, match=r"no agency 000\.00\.00\.H41 is registered"):
        await gateway.directory.bind_certificate("000.00.00.H41", "ab" * 32)
    await gateway.directory.bind_certificate("000.00.00.G22", "ab" * 32)
    assert (await gateway.directory.get("000.00.00.G22")).client_cert_sha256 == "ab" * 32
    before = await row_counts(gateway.db)
    await asyncio.sleep(gateway.settings.credential_cache_seconds + 0.2)
    async with gateway.client("000.00.00.G22") as client:
        refused = await client.post("/v1/messages", content=with_unique_document_id(sample_bytes[DOC]), headers=XML)
        listing = await client.get("/v1/messages")
    assert refused.status_code == 403 and listing.status_code == 403
    assert refused.headers["content-type"] == "application/problem+json"
    assert (
        "only over mutual TLS with the certificate whose SHA-256 fingerprint begins abababab"
        in refused.json()["detail"]
    )
    assert "this request showed none" in refused.json()["detail"]
    assert await row_counts(gateway.db) == before
    await gateway.directory.bind_certificate("000.00.00.G22", None)
    await asyncio.sleep(gateway.settings.credential_cache_seconds + 0.2)
    async with gateway.client("000.00.00.G22") as client:
        sent = await client.post("/v1/messages", content=with_unique_document_id(sample_bytes[DOC]), headers=XML)
    assert sent.status_code == 202


async def test_operators_list_suspend_and_resume_agencies_over_http(
    gateway: RunningGateway, sample_bytes: dict[str, bytes]
) -> None:
    key = await gateway.register("000.00.00.G22")
    await gateway.register("H41.01", Role.OPERATOR)
    async with gateway.client("H41.01") as operator, gateway.client("000.00.00.G22") as agency:
        listing = await operator.get("/v1/agencies")
        assert listing.status_code == 200
        assert [a["organ_id"] for a in listing.json()["items"]] == ["000.00.00.G22", "H41.01"]
        assert key not in listing.text and "key_hash" not in listing.text  # keys are shown once, never listed
        assert (await agency.get("/v1/agencies")).status_code == 403
        assert (await agency.post("/v1/agencies/H41.01/suspend", json={"reason": "x"})).status_code == 403

        suspended = await operator.post("/v1/agencies/000.00.00.G22/suspend", json={"reason": "floods the bus"})
        assert suspended.status_code == 200
        assert suspended.json()["suspended_by"] == "H41.01" and suspended.json()["suspended_reason"] == "floods the bus"
        refused = await agency.post("/v1/messages", content=with_unique_document_id(sample_bytes[DOC]), headers=XML)
        assert refused.status_code == 403 and "floods the bus" in refused.json()["detail"]  # at once, here

        assert (await operator.post("/v1/agencies/H41.01/suspend", json={"reason": "oops"})).status_code == 422
        assert (await operator.post("/v1/agencies/000.00.00.H99/suspend", json={"reason": "x"})).status_code == 404
        assert (await operator.post("/v1/agencies/000.00.00.G22/suspend", json={"reason": " "})).status_code == 422
        assert (await operator.post("/v1/agencies/000.00.00.G22/suspend")).status_code == 400
        assert (await operator.get("/v1/agencies/000.00.00.G22")).json()["suspended_at"] is not None

        resumed = await operator.post("/v1/agencies/000.00.00.G22/resume")
        assert resumed.status_code == 200 and resumed.json()["suspended_at"] is None
        sent = await agency.post("/v1/messages", content=with_unique_document_id(sample_bytes[DOC]), headers=XML)
        assert sent.status_code == 202

        history = await operator.get("/v1/agencies/000.00.00.G22/history")  # every change, its actor and time
        assert history.status_code == 200, history.text
        changes = [(c["seq"], c["action"], c["actor"], c["detail"]) for c in history.json()["items"]]
        assert changes == [
            (1, "registered", "operator-cli", {**changes[0][3], "role": "agency"}),
            (2, "suspended", "H41.01", {"reason": "floods the bus"}),
            (3, "resumed", "H41.01", {}),
        ]
        assert key not in history.text and key[:10] == changes[0][3]["key_prefix"][:10]
        assert (await agency.get("/v1/agencies/000.00.00.G22/history")).status_code == 403
        assert (await operator.get("/v1/agencies/000.00.00.H99/history")).status_code == 404


async def test_a_rotation_with_an_overlap_keeps_the_old_key_working_meanwhile(
    gateway: RunningGateway, sample_bytes: dict[str, bytes]
) -> None:
    old = await gateway.register("000.00.00.G22")
    new = await gateway.directory.rotate_key("000.00.00.G22", keep_old_for=timedelta(minutes=10))
    async with gateway.client() as client:
        for key in (old, new):  # the agency's system may still send the old key while it switches
            sent = await client.post(
                "/v1/messages",
                content=with_unique_document_id(sample_bytes[DOC]),
                headers={**XML, "Authorization": f"Bearer {key}"},
            )
            assert sent.status_code == 202, sent.text
            assert sent.json()["sender"] == "000.00.00.G22"


async def test_replay_with_idempotency_key_returns_identical_receipt(
    gateway: RunningGateway, sample_bytes: dict[str, bytes]
) -> None:
    await gateway.register("000.00.00.G22")
    headers = {**XML, "Idempotency-Key": "cv-7816-attempt"}
    async with gateway.client("000.00.00.G22") as client:
        first = await client.post("/v1/messages", content=sample_bytes[DOC], headers=headers)
        second = await client.post("/v1/messages", content=sample_bytes[DOC], headers=headers)
        conflict = await client.post("/v1/messages", content=sample_bytes["edoc_update.edxml"], headers=headers)
    assert first.status_code == second.status_code == 202
    assert second.content == first.content
    assert second.headers["idempotent-replayed"] == "true"
    assert "idempotent-replayed" not in first.headers
    assert conflict.status_code == 409
    assert conflict.json()["type"].endswith("/idempotency-conflict")
    assert await row_counts(gateway.db) == {"messages": 1, "payloads": 1, "events": 1, "outbox": 1}


async def test_replay_without_key_is_recognised_by_content(
    gateway: RunningGateway, sample_bytes: dict[str, bytes]
) -> None:
    await gateway.register("000.00.00.G22")
    async with gateway.client("000.00.00.G22") as client:
        first = await client.post("/v1/messages", content=sample_bytes[DOC], headers=XML)
        second = await client.post("/v1/messages", content=sample_bytes[DOC], headers=XML)
        changed = await client.post("/v1/messages", content=sample_bytes["edoc_update.edxml"], headers=XML)
    assert second.content == first.content
    assert changed.status_code == 202
    assert changed.json()["message_id"] != first.json()["message_id"]
    assert (await row_counts(gateway.db))["messages"] == 2


async def test_concurrent_identical_submissions_store_one_message(
    gateway: RunningGateway, sample_bytes: dict[str, bytes]
) -> None:
    await gateway.register("000.00.00.G22")
    async with gateway.client("000.00.00.G22") as client:
        responses = await asyncio.gather(
            *[
                client.post("/v1/messages", content=sample_bytes[DOC], headers={**XML, "Idempotency-Key": "race"})
                for _ in range(30)
            ]
        )
    assert {r.status_code for r in responses} == {202}
    assert len({r.content for r in responses}) == 1
    assert (await row_counts(gateway.db))["messages"] == 1


async def test_a_burst_is_group_committed(gateway: RunningGateway, sample_bytes: dict[str, bytes]) -> None:
    await gateway.register("000.00.00.G22")
    packets = [with_unique_document_id(sample_bytes[DOC]) for _ in range(200)]
    async with gateway.client("000.00.00.G22") as client:
        responses = await asyncio.gather(*[client.post("/v1/messages", content=p, headers=XML) for p in packets])
    assert [r.status_code for r in responses] == [202] * 200
    assert len({r.json()["message_id"] for r in responses}) == 200
    assert await row_counts(gateway.db) == {"messages": 200, "payloads": 200, "events": 200, "outbox": 200}


@pytest.mark.parametrize("bad_key", ["", "x" * 256, "key with spaces", "ключ"])
async def test_malformed_idempotency_keys_are_refused(
    gateway: RunningGateway, sample_bytes: dict[str, bytes], bad_key: str
) -> None:
    await gateway.register("000.00.00.G22")
    async with gateway.client("000.00.00.G22") as client:
        response = await client.post(
            "/v1/messages",
            content=sample_bytes[DOC],
            headers={**XML, "Idempotency-Key": bad_key.encode("utf-8")},
        )
    assert response.status_code == 400
    assert (await row_counts(gateway.db))["messages"] == 0
