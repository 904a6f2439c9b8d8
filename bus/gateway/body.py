"""Reading a request body under a size cap, before anything parses it.

The cap is checked against Content-Length up front and again on every chunk, so a client that lies about the
length, or streams without one, is cut off as soon as it crosses the cap; nothing oversized is ever buffered whole.
"""

from __future__ import annotations

from starlette.requests import Request

from docbus.errors import NotWellFormed, PayloadTooLarge


async def read_capped_body(request: Request, cap: int) -> bytes:
    declared = request.headers.get("content-length")
    if declared is not None:
        try:
            length = int(declared)
        except ValueError as exc:
            raise NotWellFormed("Content-Length is not a number") from exc
        if length > cap:
            raise PayloadTooLarge(f"the body is {length} bytes; this bus accepts at most {cap} bytes")
    chunks: list[bytes] = []
    total = 0
    async for chunk in request.stream():
        total += len(chunk)
        if total > cap:
            raise PayloadTooLarge(f"the body exceeds the limit of {cap} bytes")
        chunks.append(chunk)
    return chunks[0] if len(chunks) == 1 else b"".join(chunks)
