"""Intake's cost per accepted document, measured in one process without HTTP: for comparing two versions of the
code where wall-clock runs on a shared machine cannot (they vary by 5-10% between identical runs).

    python tests/benchmark/intake_instructions.py [--documents 4000] [--concurrency 32]

drives the gateway's ASGI app (``docbus gateway``'s, relay off) on uvloop with 10 KB edXML documents, each with its
own DocumentId and Idempotency-Key, ``--concurrency`` at a time (so they are group-committed as under load), on a
fresh SQLite database, and prints the process' CPU and wall time per document. Under valgrind it counts
instructions, which repeat to a fraction of a percent:

    valgrind --tool=callgrind --instr-atstart=no python tests/benchmark/intake_instructions.py --callgrind \
        --documents 256

``--callgrind`` switches collection on (``callgrind_control``) once the app is warm and dumps it after the
measured documents; the dump's ``summary`` divided by ``--documents`` is the count per document.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
BIN = Path(sys.executable).parent
SENDER = "000.00.00.G22"


def callgrind(*args: str) -> None:
    subprocess.run(["callgrind_control", *args, str(os.getpid())], capture_output=True, check=False)


async def drive(documents: int, concurrency: int, template: bytes, key: str, use_callgrind: bool) -> None:
    from docbus.gateway.app import create_app
    from docbus.heap import settle_heap
    from docbus.settings import Settings

    app = create_app(Settings(), sweep=False)
    lifespan: asyncio.Queue[dict[str, Any]] = asyncio.Queue()
    started: list[dict[str, Any]] = []

    async def lifespan_send(message: dict[str, Any]) -> None:
        started.append(message)

    await lifespan.put({"type": "lifespan.startup"})
    scope = {"type": "lifespan", "asgi": {"version": "3.0"}, "state": {}}
    running = asyncio.create_task(app(scope, lifespan.get, lifespan_send))
    while not started:
        await asyncio.sleep(0.01)
    assert started[0]["type"] == "lifespan.startup.complete", started
    settle_heap()
    head, tail = template.split(b"__SEQ__")
    sequence = 0
    statuses: dict[int, int] = {}

    async def submit() -> None:
        nonlocal sequence
        sequence += 1
        number = f"{sequence:012d}".encode()
        body = head + number + tail
        headers = [
            (b"content-type", b"application/xml"),
            (b"authorization", b"Bearer " + key.encode()),
            (b"idempotency-key", b"bench-" + number),
            (b"content-length", str(len(body)).encode()),
        ]
        request = {"type": "http", "asgi": {"version": "3.0"}, "http_version": "1.1", "method": "POST",
                   "scheme": "http", "path": "/v1/messages", "raw_path": b"/v1/messages", "query_string": b"",
                   "root_path": "", "headers": headers, "client": ("127.0.0.1", 5000),
                   "server": ("127.0.0.1", 8000), "state": {}}  # fmt: skip
        sent = False

        async def receive() -> dict[str, Any]:
            nonlocal sent
            if not sent:
                sent = True
                return {"type": "http.request", "body": body, "more_body": False}
            await asyncio.Event().wait()  # never disconnects
            raise AssertionError

        async def send(message: dict[str, Any]) -> None:
            if message["type"] == "http.response.start":
                statuses[message["status"]] = statuses.get(message["status"], 0) + 1

        await app(request, receive, send)

    async def client(count: int) -> None:
        for _ in range(count):
            await submit()

    await asyncio.gather(*(client(256 // concurrency) for _ in range(concurrency)))  # warm-up
    statuses.clear()
    if use_callgrind:
        callgrind("-i", "on")
        callgrind("-z")
    cpu, wall = time.process_time(), time.perf_counter()
    await asyncio.gather(*(client(documents // concurrency) for _ in range(concurrency)))
    cpu, wall = time.process_time() - cpu, time.perf_counter() - wall
    if use_callgrind:
        callgrind("-d", "measured")
        callgrind("-i", "off")
    measured = documents // concurrency * concurrency
    print(f"{measured} documents: CPU {1e6 * cpu / measured:.0f} µs, wall {1e6 * wall / measured:.0f} µs per "
          f"document; answers {statuses}")  # fmt: skip
    assert statuses == {202: measured}, statuses
    await lifespan.put({"type": "lifespan.shutdown"})
    await running


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--documents", type=int, default=4000)
    parser.add_argument("--concurrency", type=int, default=32)
    parser.add_argument("--callgrind", action="store_true", help="count only the measured documents (valgrind)")
    args = parser.parse_args()
    sys.path.insert(0, str(HERE))
    from intake_bench import make_template

    with tempfile.TemporaryDirectory(prefix="docbus-instructions-") as folder:
        work = Path(folder)
        template = work / "template.xml"
        make_template(10240, template)
        os.environ |= {"DOCBUS_DATA_DIR": str(work / "data"), "DOCBUS_RELAY_ENABLED": "false"}
        added = subprocess.run([str(BIN / "docbus"), "agency", "add", SENDER, "--name", "Văn phòng Chính phủ"],
                               capture_output=True, text=True, check=True)  # fmt: skip
        key = added.stdout.strip().splitlines()[-1]
        import uvloop

        uvloop.run(drive(args.documents, args.concurrency, template.read_bytes(), key, args.callgrind))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
