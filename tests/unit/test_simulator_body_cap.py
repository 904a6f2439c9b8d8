"""The simulators' body reading stops at the cap: it pulls no more of a streamed body than it needs to refuse it."""

from __future__ import annotations

from typing import Any

import pytest
from starlette.requests import Request

from docbus.simulators.common import FILE_ERROR, Refusal, capped_body

CHUNK = b"x" * 1000


def streamed(chunks: int, headers: list[tuple[bytes, bytes]] | None = None) -> tuple[Request, list[int]]:
    """A request whose body arrives in ``chunks`` chunks; the list counts the chunks read."""
    pulled = [0]

    async def receive() -> dict[str, Any]:
        pulled[0] += 1
        return {"type": "http.request", "body": CHUNK, "more_body": pulled[0] < chunks}

    scope = {"type": "http", "method": "POST", "path": "/sendEdoc", "headers": headers or []}
    return Request(scope, receive), pulled


async def test_a_streamed_body_is_cut_at_the_cap() -> None:
    request, pulled = streamed(1_000)  # a megabyte in all, no Content-Length
    with pytest.raises(Refusal) as refused:
        await capped_body(request, 5 * len(CHUNK))
    assert (refused.value.code, refused.value.http_status) == (FILE_ERROR, 413)
    assert pulled == [6]  # the sixth chunk crossed the cap; nothing after it was read


async def test_a_declared_length_over_the_cap_is_refused_unread() -> None:
    request, pulled = streamed(1_000, [(b"content-length", b"1000000")])
    with pytest.raises(Refusal):
        await capped_body(request, 5 * len(CHUNK))
    assert pulled == [0]


async def test_a_body_within_the_cap_is_read_whole() -> None:
    request, pulled = streamed(5)
    assert await capped_body(request, 5 * len(CHUNK)) == CHUNK * 5
    assert pulled == [5]
