"""Hostile bodies over real HTTP: each gets a clear problem+json and leaves nothing behind."""

from __future__ import annotations

import time
from collections.abc import AsyncIterator

import orjson
import pytest

from ..conftest import RunningGateway
from ..unit.test_validation_dossier import DOSSIER
from .helpers import row_counts

XML = {"Content-Type": "application/xml"}
SENDER = "000.00.00.G22"

XXE_FILE = b"""<?xml version="1.0"?>
<!DOCTYPE edXML [<!ENTITY xxe SYSTEM "file:///etc/passwd">]>
<edXML xmlns="http://www.mic.gov.vn/TBT/QCVN_102_2016"><x>&xxe;</x></edXML>"""

XXE_NETWORK = b"""<?xml version="1.0"?>
<!DOCTYPE edXML [<!ENTITY % remote SYSTEM "http://127.0.0.1:9/evil.dtd"> %remote;]>
<edXML xmlns="http://www.mic.gov.vn/TBT/QCVN_102_2016"/>"""

BILLION_LAUGHS = (
    b'<?xml version="1.0"?>\n<!DOCTYPE lolz [\n<!ENTITY lol "lol">\n'
    + b"".join(
        f'<!ENTITY lol{i} "{("&lol" + (str(i - 1) if i > 1 else "") + ";") * 10}">\n'.encode() for i in range(1, 10)
    )
    + b']>\n<edXML xmlns="http://www.mic.gov.vn/TBT/QCVN_102_2016">&lol9;</edXML>'
)

DEEP = b'<?xml version="1.0"?>' + b"<a>" * 10_000 + b"</a>" * 10_000


async def _post(gateway: RunningGateway, body: bytes, headers: dict[str, str]) -> tuple[int, dict[str, object]]:
    async with gateway.client(SENDER) as client:
        response = await client.post("/v1/messages", content=body, headers=headers)
    assert response.headers["content-type"] == "application/problem+json", response.text
    return response.status_code, response.json()


@pytest.mark.parametrize(
    ("name", "body"),
    [
        ("xxe-file", XXE_FILE),
        ("xxe-network", XXE_NETWORK),
        ("billion-laughs", BILLION_LAUGHS),
        ("deep", DEEP),
    ],
)
async def test_unsafe_xml_is_refused_quickly(gateway: RunningGateway, name: str, body: bytes) -> None:
    await gateway.register(SENDER)
    started = time.perf_counter()
    status, problem = await _post(gateway, body, XML)
    elapsed = time.perf_counter() - started
    assert status == 400, (name, problem)
    text = str(problem)
    assert "root:" not in text and "/bin/" not in text
    # Generous bound: an expanding parser would take seconds and gigabytes; the benchmark reports real figures.
    assert elapsed < 2.0
    assert (await row_counts(gateway.db))["messages"] == 0


@pytest.mark.parametrize(
    ("name", "body", "rule_fragment"),
    [
        ("invalid-utf8", b'<?xml version="1.0" encoding="UTF-8"?><edXML>\xff\xfe</edXML>', ""),
        ("junk-before-declaration", b'junk<?xml version="1.0"?><edXML/>', ""),
        ("space-before-declaration", b'   <?xml version="1.0"?><edXML/>', ""),
        ("empty", b"", ""),
        (
            "truncated",
            b'<?xml version="1.0"?><edXML xmlns="http://www.mic.gov.vn/TBT/QCVN_102_2016"><edX',
            "",
        ),
    ],
)
async def test_malformed_bodies_are_400(gateway: RunningGateway, name: str, body: bytes, rule_fragment: str) -> None:
    await gateway.register(SENDER)
    status, problem = await _post(gateway, body, XML)
    assert status == 400, (name, problem)
    assert problem["errors"], name
    assert (await row_counts(gateway.db))["messages"] == 0


@pytest.mark.parametrize("content_type", ["text/plain", "application/octet-stream", "multipart/form-data", ""])
async def test_wrong_content_type_is_415(
    gateway: RunningGateway, sample_bytes: dict[str, bytes], content_type: str
) -> None:
    await gateway.register(SENDER)
    status, problem = await _post(
        gateway, sample_bytes["edoc_with_attachment_dc0bdef0.edxml"], {"Content-Type": content_type}
    )
    assert status == 415
    assert problem["type"].endswith("/unsupported-media-type")


async def test_body_over_the_cap_is_413_by_length(gateway: RunningGateway) -> None:
    await gateway.register(SENDER)
    cap = gateway.settings.max_body_bytes
    status, problem = await _post(gateway, b"<a>" + b"x" * cap + b"</a>", XML)
    assert status == 413
    assert str(cap) in str(problem["detail"])


async def test_body_over_the_cap_is_413_while_streaming(gateway: RunningGateway) -> None:
    """No Content-Length (chunked): the cap is enforced on the bytes as they arrive."""
    await gateway.register(SENDER)
    cap = gateway.settings.max_body_bytes

    async def chunks() -> AsyncIterator[bytes]:
        yield b"<a>"
        for _ in range(cap // 65536 + 2):
            yield b"x" * 65536

    async with gateway.client(SENDER) as client:
        response = await client.post("/v1/messages", content=chunks(), headers=XML)
    assert response.status_code == 413
    assert (await row_counts(gateway.db))["messages"] == 0


async def test_json_hostile_bodies(gateway: RunningGateway) -> None:
    await gateway.register(SENDER)
    json_headers = {"Content-Type": "application/json"}
    for body in (b"{", b"[1,2,3]", b'{"kind": "dossier"}', b"\xff\xfe", b"[" * 100_000 + b"]" * 100_000):
        status, problem = await _post(gateway, body, json_headers)
        assert status in (400, 422), (body[:20], problem)
        assert problem["errors"]
    assert (await row_counts(gateway.db))["messages"] == 0


async def test_a_document_for_too_many_receivers_is_422_and_stores_nothing(
    gateway: RunningGateway, sample_bytes: dict[str, bytes]
) -> None:
    from .test_forwarding import document

    await gateway.register(SENDER)
    receivers = tuple(f"{i // 10_000:03d}.{i // 100 % 100:02d}.{i % 100:02d}.H41" for i in range(1_001))
    body = document(sample_bytes["edoc_with_attachment_dc0bdef0.edxml"], receivers)
    status, problem = await _post(gateway, body, XML)
    assert status == 422
    errors = problem["errors"]
    assert isinstance(errors, list) and [e["rule"] for e in errors] == ["too-many-receivers"]
    assert errors[0]["path"].endswith("/To[1001]/OrganId")
    assert errors[0]["expected"] == "at most 1000 receivers"
    assert (await row_counts(gateway.db))["messages"] == 0


async def test_a_dossier_naming_its_sender_twice_is_refused(gateway: RunningGateway) -> None:
    """A valid dossier from H41 whose body also names G22 as ``from`` before it: a reader that keeps the first of
    two equal names would take it for G22's. Refused with the place, and nothing stored."""
    await gateway.register("000.00.00.H41")
    body = orjson.dumps(DOSSIER)
    assert body.startswith(b'{"schema"')
    smuggled = b'{"from":"000.00.00.G22",' + body[1:]
    async with gateway.client("000.00.00.H41") as client:
        plain = await client.post("/v1/validate", content=body, headers={"Content-Type": "application/json"})
        answer = await client.post("/v1/messages", content=smuggled, headers={"Content-Type": "application/json"})
    assert plain.status_code == 200, plain.text  # the same dossier without the second name is fine
    assert answer.status_code == 400
    problem = answer.json()
    second = smuggled.index(b'"from"', 2) + 1  # columns count from 1
    assert [(e["rule"], e["line"], e["column"]) for e in problem["errors"]] == [("duplicate-member", 1, second)]
    assert (await row_counts(gateway.db))["messages"] == 0
