"""The simulators' cheap answers: ids and JSON bodies the same as the standard library's and Starlette's."""

from __future__ import annotations

import uuid

from starlette.responses import JSONResponse

from docbus.simulators.common import AxisAnswer, new_doc_id
from docbus.simulators.national_axis import failure, ok


def test_doc_ids_are_distinct_random_version_4_uuids_in_canonical_text() -> None:
    ids = [new_doc_id() for _ in range(2000)]
    assert len(set(ids)) == len(ids)
    for text in ids:
        parsed = uuid.UUID(text)
        assert str(parsed) == text
        assert parsed.version == 4 and parsed.variant == uuid.RFC_4122


def test_an_answer_has_the_bytes_and_headers_of_a_json_response() -> None:
    bodies = [
        ok(DocId=new_doc_id(), Duplicate=False),
        failure(15, "chữ ký không hợp lệ / bad signature"),
        ok(data=[{"DocId": "d1", "from": "000.00.00.G22", "status": None, "n": 3}, {"x": [1.5, True]}]),
    ]
    for body in bodies:
        for status in (200, 401):
            ours, theirs = AxisAnswer(body, status_code=status), JSONResponse(body, status_code=status)
            assert ours.body == theirs.body
            assert ours.status_code == theirs.status_code
            assert ours.raw_headers == theirs.raw_headers
