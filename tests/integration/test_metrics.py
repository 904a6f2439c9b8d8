"""Prometheus metrics from real processes: a gateway of two worker processes counts what both did on every scrape,
and a ``docbus worker`` serves its forwarding metrics on its own port."""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
from pathlib import Path

import httpx
from prometheus_client.parser import text_string_to_metric_families

from ..conftest import free_port
from .test_crash_safety import wait_ready
from .test_forwarding import document
from .test_routes_and_events import ROUTES  # archive: the file adapter, for receivers under H41

SENDER = "000.00.00.G22"


def samples(text: str) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    """Every sample of an exposition, keyed by name and sorted labels."""
    return {
        (sample.name, tuple(sorted(sample.labels.items()))): sample.value
        for family in text_string_to_metric_families(text)
        for sample in family.samples
    }


def spawn(env: dict[str, str], log: Path, *args: str) -> subprocess.Popen[bytes]:
    with log.open("ab") as out:
        return subprocess.Popen(
            [sys.executable, "-m", "docbus.cli", *args, "--log-level", "warning"],
            env=env,
            stdout=out,
            stderr=subprocess.STDOUT,
        )


def stop(proc: subprocess.Popen[bytes]) -> None:
    proc.send_signal(signal.SIGTERM)
    proc.wait(timeout=30)


async def test_gateway_processes_and_the_worker_count_everything(
    tmp_path: Path, sample_bytes: dict[str, bytes]
) -> None:
    routes = tmp_path / "routes.toml"
    routes.write_text(ROUTES)
    archive = tmp_path / "archive"
    archive.mkdir()
    env = {**os.environ, "DOCBUS_DATA_DIR": str(tmp_path / "data"), "DOCBUS_ROUTES_FILE": str(routes)}
    env["DOCBUS_ADAPTERS__ARCHIVE__DIRECTORY"] = str(archive)
    for name in ("DOCBUS_DATABASE_URL", "DOCBUS_KAFKA_BOOTSTRAP", "PROMETHEUS_MULTIPROC_DIR"):
        env.pop(name, None)
    added = subprocess.run(
        [sys.executable, "-m", "docbus.cli", "agency", "add", SENDER, "--name", "VPCP"],
        env=env,
        capture_output=True,
        text=True,
        check=True,
    )
    key = added.stdout.strip().splitlines()[-1]
    port, metrics_port = free_port(), free_port()
    base = f"http://127.0.0.1:{port}"
    gateway = spawn(env, tmp_path / "gateway.log", "gateway", "--port", str(port), "--workers", "2")
    worker = spawn(env, tmp_path / "worker.log", "worker", "--metrics-port", str(metrics_port))
    count = 40
    try:
        await wait_ready(base, gateway)
        template = sample_bytes["edoc_with_attachment_dc0bdef0.edxml"]
        packets = [document(template, ("000.00.01.H41",)) for _ in range(count)]
        limits = httpx.Limits(max_keepalive_connections=0)  # a connection per request: both processes take some
        async with httpx.AsyncClient(base_url=base, limits=limits, timeout=30) as client:
            answers = await asyncio.gather(
                *(
                    client.post(
                        "/v1/messages",
                        content=p,
                        headers={"Authorization": f"Bearer {key}", "Content-Type": "application/xml"},
                    )
                    for p in packets
                )
            )
            assert [a.status_code for a in answers] == [202] * count
            refused = await client.post(
                "/v1/messages",
                content=b"<edXML",
                headers={"Authorization": f"Bearer {key}", "Content-Type": "application/xml"},
            )
            assert refused.status_code == 400
            scrapes = [samples((await client.get("/metrics")).text) for _ in range(8)]
        for scrape in scrapes:  # whichever process answered, it reports both processes' counts
            assert scrape[("docbus_intake_accepted_total", ())] == count
            assert scrape[("docbus_intake_seconds_count", (("status", "2xx"),))] == count
            assert scrape[("docbus_intake_seconds_count", (("status", "4xx"),))] == 1
            assert scrape[("docbus_gateway_body_bytes", ())] == 0  # every body given back, in both processes

        async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{metrics_port}", timeout=10) as scraper:
            delivered = ("docbus_deliveries_total", (("destination", "archive"), ("outcome", "delivered")))
            latency = ("docbus_delivery_latency_seconds_count", (("destination", "archive"),))
            for _ in range(600):
                worker_metrics = samples((await scraper.get("/metrics")).text)
                if worker_metrics.get(delivered) == count:
                    break
                await asyncio.sleep(0.05)
            assert worker_metrics.get(delivered) == count
            assert worker_metrics[latency] == count
        assert len(list(archive.rglob("*.edxml"))) == count
        async with httpx.AsyncClient(base_url=base, timeout=30) as client:
            published_by_gateways = samples((await client.get("/metrics")).text).get(("docbus_published_total", ()), 0)
        assert published_by_gateways + worker_metrics.get(("docbus_published_total", ()), 0) == count
    finally:
        stop(worker)
        stop(gateway)
