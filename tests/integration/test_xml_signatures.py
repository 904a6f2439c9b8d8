"""XML-DSig signatures over real HTTP, on a gateway that refuses invalid signatures: the signed receipt attests
what the check found, the timeline keeps it, and a packet changed after signing is refused with nothing stored."""

from __future__ import annotations

from pathlib import Path

import pytest

from docbus.settings import Settings
from docbus.signing import verify_jws
from docbus.validation.xml_signature import SignaturePolicy

from ..conftest import RunningGateway
from ..unit.conftest import EDOC
from ..xml_signing import identity, sign_packet
from .helpers import row_counts

XML = {"Content-Type": "application/xml"}
SENDER = "000.00.00.G22"


@pytest.fixture
def gateway_settings(tmp_path: Path, database_url: str) -> Settings:
    return Settings(
        data_dir=tmp_path / "data", database_url=database_url, xml_signature_policy=SignaturePolicy.REJECT_INVALID
    )


async def test_signatures_are_attested_and_broken_ones_refused(gateway: RunningGateway) -> None:
    await gateway.register(SENDER)
    signed = sign_packet(EDOC.encode(), identity("Văn phòng Chính phủ"))
    tampered = signed.replace("kết nối".encode(), "ngắt kết nối".encode(), 1)
    async with gateway.client() as anonymous:
        jwks = (await anonymous.get("/v1/keys")).json()
    async with gateway.client(SENDER) as client:
        refused = await client.post("/v1/messages", content=tampered, headers=XML)
        assert refused.status_code == 422, refused.text
        assert refused.headers["content-type"].startswith("application/problem+json")
        (error,) = refused.json()["errors"]
        assert error["rule"] == "signature-invalid"
        assert error["path"] == "/edXML/edXMLEnvelope/edXMLHeader/Signature"
        assert "changed after it was signed" in error["message_en"]
        assert await row_counts(gateway.db) == {"messages": 0, "payloads": 0, "events": 0, "outbox": 0}

        # C14N refuses relative namespace URIs: an outcome (422 here), not a server error.
        relative = signed.replace(b"<edXML:Subject>", b'<edXML:Subject xmlns:rel="relative/ns">', 1)
        unsupported = await client.post("/v1/messages", content=relative, headers=XML)
        assert unsupported.status_code == 422, unsupported.text
        assert unsupported.json()["errors"][0]["rule"] == "signature-unsupported"
        assert await row_counts(gateway.db) == {"messages": 0, "payloads": 0, "events": 0, "outbox": 0}

        sandbox = await client.post("/v1/validate", content=tampered, headers=XML)
        assert sandbox.status_code == 422 and sandbox.json()["errors"][0]["rule"] == "signature-invalid"

        accepted = await client.post("/v1/messages", content=signed, headers=XML)
        assert accepted.status_code == 202, accepted.text
        receipt = accepted.json()
        attested = receipt["xml_signature"]
        assert attested["status"] == "valid" and attested["covers_document"] is True
        assert attested["signer"]["subject"] == "CN=Văn phòng Chính phủ,C=VN"
        assert verify_jws(receipt["signature"], jwks)["xml_signature"] == attested  # the bus signs what it found

        timeline = (await client.get(accepted.headers["location"])).json()
        assert timeline["events"][0]["type"] == "ACCEPTED"
        assert timeline["events"][0]["detail"]["xml_signature"] == attested

        report = await client.post("/v1/validate", content=signed, headers=XML)
        assert report.status_code == 200 and report.json()["xml_signature"] == attested

        unsigned = await client.post("/v1/messages", content=EDOC.replace("123/VPCP", "124/VPCP").encode(), headers=XML)
        assert unsigned.status_code == 202, unsigned.text  # this policy refuses broken signatures, not their absence
        assert "xml_signature" not in unsigned.json()
    assert (await row_counts(gateway.db))["messages"] == 2
