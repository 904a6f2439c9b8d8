"""Intake benchmark: docbus vs a no-op endpoint on the same server stack, measured in one run.

    python tests/benchmark/intake_bench.py [--duration 15] [--connections 64] [--workers 1,2]

For each worker count it starts a no-op FastAPI app and then docbus (full validation, durable group-committed
write, signed receipt) under uvicorn, drives each with wrk (10 KB edXML documents, a fresh DocumentId and
Idempotency-Key per request) and prints msgs/s, p50 and p99 of both and their ratio. The machine is shared and
noisy, so only the ratios of one run mean much; absolute numbers are for orientation.
"""

from __future__ import annotations

import argparse
import base64
import contextlib
import os
import random
import re
import shutil
import signal
import socket
import sqlite3
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx

HERE = Path(__file__).resolve().parent
REPO = HERE.parents[1]
SAMPLES = Path(os.environ.get("DOCBUS_SAMPLES_DIR", REPO.parent / "shared" / "samples" / "edxml"))
BIN = Path(sys.executable).parent
SENDER = "000.00.00.G22"


@dataclass
class Result:
    requests: int
    failed: int
    seconds: float
    p50_ms: float
    p99_ms: float

    @property
    def rate(self) -> float:
        return (self.requests - self.failed) / self.seconds


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def make_template(size: int, path: Path) -> None:
    """A real edXML document (from the samples) padded to ``size`` bytes, DocumentId number = ``__SEQ__``."""
    text = (SAMPLES / "edoc_with_attachment_dc0bdef0.edxml").read_text(encoding="utf-8")
    text = text.replace("000.00.00.G22,2015/09/30,7816/VPCP-TTĐT", "000.00.00.G22,2026/11/27,__SEQ__/VPCP-TTĐT", 1)
    start = text.index("<edXML:ContentTransferEncoded")
    start = text.index(">", start) + 1
    end = text.index("</edXML:ContentTransferEncoded>")
    head, tail = text[:start], text[end:]
    budget = size - len((head + tail).encode("utf-8"))
    blob = base64.b64encode(random.Random(7).randbytes(budget))[: max(budget, 0)].decode()
    path.write_text(head + blob + tail, encoding="utf-8")


@contextlib.contextmanager
def serving(cmd: list[str], env: dict[str, str], port: int, probe: str, log: Path) -> Iterator[None]:
    proc = subprocess.Popen(cmd, env=env, stdout=log.open("ab"), stderr=subprocess.STDOUT, start_new_session=True)
    try:
        for _ in range(300):
            if proc.poll() is not None:
                raise RuntimeError(f"server exited: see {log}")
            try:
                if httpx.get(f"http://127.0.0.1:{port}{probe}", timeout=1).status_code < 500:
                    break
            except httpx.TransportError:
                time.sleep(0.1)
        else:
            raise RuntimeError("server did not start")
        yield
    finally:
        os.killpg(proc.pid, signal.SIGTERM)
        try:
            proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()


def wrk(port: int, duration: float, connections: int, env: dict[str, str]) -> Result:
    out = subprocess.run(
        [
            "wrk",
            "-t2",
            f"-c{connections}",
            f"-d{duration}s",
            "--timeout",
            "10s",
            "-s",
            str(HERE / "post.lua"),
            f"http://127.0.0.1:{port}",
        ],
        env=env,
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    match = re.search(r"BENCH requests=(\d+) failed=(\d+) seconds=([\d.]+) p50_us=(\d+) p99_us=(\d+)", out)
    if not match:
        raise RuntimeError(f"unexpected wrk output:\n{out}")
    req, failed, secs, p50, p99 = match.groups()
    return Result(int(req), int(failed), float(secs), int(p50) / 1000, int(p99) / 1000)


def register(env: dict[str, str]) -> str:
    out = subprocess.run(
        [str(BIN / "docbus"), "agency", "add", SENDER, "--name", "Văn phòng Chính phủ"],
        env=env,
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    return out.strip().splitlines()[-1]


def bench_noop(workers: int, args: argparse.Namespace, env: dict[str, str], work: Path) -> Result:
    port = free_port()
    cmd = [
        str(BIN / "uvicorn"),
        "noop_app:app",
        "--app-dir",
        str(HERE),
        "--port",
        str(port),
        "--workers",
        str(workers),
        "--loop",
        "uvloop",
        "--http",
        "httptools",
        "--no-access-log",
        "--log-level",
        "warning",
    ]
    with serving(cmd, env, port, "/docs", work / "noop.log"):
        wrk(port, args.warmup, args.connections, env)
        return wrk(port, args.duration, args.connections, env)


def bench_docbus(workers: int, args: argparse.Namespace, env: dict[str, str], work: Path) -> tuple[Result, int]:
    data = work / f"docbus-{workers}"
    shutil.rmtree(data, ignore_errors=True)
    env = {**env, "DOCBUS_DATA_DIR": str(data)}
    env.pop("DOCBUS_DATABASE_URL", None)
    env.pop("DOCBUS_KAFKA_BOOTSTRAP", None)
    env["BENCH_KEY"] = register(env)
    port = free_port()
    cmd = [
        str(BIN / "docbus"),
        "serve",
        "--port",
        str(port),
        "--workers",
        str(workers),
        "--log-level",
        "warning",
    ]
    with serving(cmd, env, port, "/healthz", work / "docbus.log"):
        wrk(port, args.warmup, args.connections, env)
        result = wrk(port, args.duration, args.connections, env)
    with sqlite3.connect(data / "docbus.sqlite3") as conn:
        stored = int(conn.execute("SELECT count(*) FROM messages").fetchone()[0])
    return result, stored


def hostile_latency(work: Path, env: dict[str, str]) -> dict[str, float]:
    """p50/max time to refuse XXE and billion-laughs payloads (ms), against a 1-worker docbus."""
    data = work / "docbus-hostile"
    env = {**env, "DOCBUS_DATA_DIR": str(data)}
    key = register(env)
    port = free_port()
    sys.path.insert(0, str(REPO))
    from tests.integration.test_hostile_input import BILLION_LAUGHS, DEEP, XXE_FILE

    timings: dict[str, float] = {}
    cmd = [str(BIN / "docbus"), "serve", "--port", str(port), "--log-level", "warning"]
    with (
        serving(cmd, env, port, "/healthz", work / "docbus.log"),
        httpx.Client(base_url=f"http://127.0.0.1:{port}", headers={"Authorization": f"Bearer {key}"}) as c,
    ):
        for name, body in (("xxe", XXE_FILE), ("billion-laughs", BILLION_LAUGHS), ("deep-10000", DEEP)):
            samples = []
            for _ in range(50):
                t = time.perf_counter()
                status = c.post("/v1/messages", content=body, headers={"Content-Type": "application/xml"})
                samples.append((time.perf_counter() - t) * 1000)
                assert status.status_code == 400, status.text
            samples.sort()
            timings[name] = samples[len(samples) // 2]
            timings[name + " max"] = samples[-1]
    return timings


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--duration", type=float, default=15)
    parser.add_argument("--warmup", type=float, default=3)
    parser.add_argument("--connections", type=int, default=64)
    parser.add_argument("--workers", default="1,2")
    parser.add_argument("--size", type=int, default=10 * 1024)
    args = parser.parse_args()
    if not shutil.which("wrk"):
        print("wrk is not installed (apt-get install -y wrk)", file=sys.stderr)
        return 2
    work = Path(tempfile.mkdtemp(prefix="docbus-bench-"))
    template = work / "template.edxml"
    make_template(args.size, template)
    env = {**os.environ, "BENCH_TEMPLATE": str(template), "PATH": f"{BIN}:{os.environ['PATH']}"}
    print(f"# intake benchmark: {args.size} B edXML, {args.connections} connections, {args.duration:.0f}s per run")
    rows = []
    for workers in [int(w) for w in args.workers.split(",")]:
        noop = bench_noop(workers, args, env, work)
        docbus, stored = bench_docbus(workers, args, env, work)
        rows.append((workers, noop, docbus, stored))
        print(
            f"workers={workers}  docbus {docbus.rate:8.0f} msg/s"
            f" p50 {docbus.p50_ms:6.2f} ms p99 {docbus.p99_ms:6.2f} ms"
            f" (failed {docbus.failed}, stored {stored})  |  no-op {noop.rate:8.0f} msg/s p50 {noop.p50_ms:6.2f} ms"
            f" p99 {noop.p99_ms:6.2f} ms  |  ratio {docbus.rate / noop.rate:.2f}",
            flush=True,
        )
    best = max(rows, key=lambda r: r[2].rate)
    print(
        f"best: workers={best[0]} docbus/no-op ratio {best[2].rate / best[1].rate:.2f}, "
        f"docbus p99 {best[2].p99_ms:.2f} ms"
    )
    for name, ms in hostile_latency(work, env).items():
        print(f"refusal latency {name}: {ms:.1f} ms")
    shutil.rmtree(work, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
