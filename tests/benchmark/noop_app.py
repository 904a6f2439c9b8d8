"""The comparison point of the intake benchmark: the same server stack (uvicorn + httptools + uvloop + FastAPI),
the same route and body, and no work at all beyond reading the body and answering 202."""

from __future__ import annotations

from fastapi import FastAPI, Request
from starlette.responses import Response

app = FastAPI()


@app.post("/v1/messages", status_code=202)
async def noop(request: Request) -> Response:
    await request.body()
    return Response(b'{"accepted":true}', status_code=202, media_type="application/json")
