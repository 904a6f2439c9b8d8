"""Intake benchmark: docbus vs a no-op endpoint on the same server stack, measured in one run.

    python tests/benchmark/intake_bench.py [--duration 15] [--rounds 3] [--connections 64] [--workers 1,2]

For each worker count it starts a no-op FastAPI app and the docbus gateway (full validation, durable
group-committed write, signed receipt; publishing left to workers) under uvicorn, drives them in turn with wrk
(10 KB edXML documents, a fresh DocumentId and Idempotency-Key per request) over interleaved rounds, and prints
msgs/s, p50 and p99 of both and their ratio. A third contender takes its turns beside them: intake's essential
work alone (``essentials_app.py``: parse, XSD, hash, signed receipt, group commit, nothing else), the ceiling no
version of docbus can pass on the same machine. Then ``docbus serve`` (every role in one process) for comparison.
With ``--kafka`` it goes on to intake-only vs intake-to-Kafka (the gateway plus one ``docbus worker`` that
publishes), again in interleaved rounds, vs Kafka's own producer, and forwarding to the national axis simulator
at half the intake-to-Kafka rate (one worker publishing and another forwarding; ``--one-worker`` for one doing
both). The machine is shared and its speed drifts, so a comparison's contenders take
turns and the run reports the median of the per-round ratios; absolute numbers are for orientation.
"""

from __future__ import annotations

import argparse
import base64
import contextlib
import itertools
import math
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
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
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
def running(cmd: list[str], env: dict[str, str], log: Path, settle: float = 2.0) -> Iterator[subprocess.Popen[bytes]]:
    """A background process (its own process group), stopped with SIGTERM (then SIGKILL) at the end; ``settle``
    seconds to check it did not exit at once (``docbus worker`` has no port to probe)."""
    with log.open("ab") as output:
        proc = subprocess.Popen(cmd, env=env, stdout=output, stderr=subprocess.STDOUT, start_new_session=True)
        try:
            time.sleep(settle)
            if proc.poll() is not None:
                raise RuntimeError(f"{cmd[1]} exited: see {log}")
            yield proc
        finally:
            os.killpg(proc.pid, signal.SIGTERM)
            try:
                proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                os.killpg(proc.pid, signal.SIGKILL)
                proc.wait()


@contextlib.contextmanager
def serving(cmd: list[str], env: dict[str, str], port: int, probe: str, log: Path) -> Iterator[subprocess.Popen[bytes]]:
    """A server process (the leader of its own process group), yielded once ``probe`` answers below 500."""
    with running(cmd, env, log, settle=0) as proc:
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
        yield proc


WRK_THREADS = 2


def wrk(port: int, duration: float, connections: int, env: dict[str, str]) -> Result:
    out = subprocess.run(
        [
            "wrk",
            f"-t{WRK_THREADS}",
            f"-c{connections}",
            f"-d{max(1, round(duration))}s",
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


def uvicorn_command(app: str, port: int, workers: int) -> list[str]:
    """``app`` (``module:attribute``, or ``--factory module:function``) from this folder, served by uvicorn with
    httptools and uvloop: the stack every contender of the intake comparison shares."""
    return [
        str(BIN / "uvicorn"),
        *app.split(),
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


@contextlib.contextmanager
def noop_server(workers: int, env: dict[str, str], work: Path) -> Iterator[int]:
    """The no-op FastAPI endpoint on the same uvicorn + httptools + uvloop stack; yields its port."""
    port = free_port()
    with serving(uvicorn_command("noop_app:app", port, workers), env, port, "/docs", work / "noop.log"):
        yield port


@contextlib.contextmanager
def essentials_server(workers: int, env: dict[str, str], work: Path) -> Iterator[int]:
    """Intake's essential work alone (``essentials_app.py``) on the same stack; yields its port."""
    port = free_port()
    database = work / f"essentials-{workers}.sqlite3"
    for leftover in work.glob(f"{database.name}*"):
        leftover.unlink()
    cmd = uvicorn_command("--factory essentials_app:create_app", port, workers)
    server_env = {**env, "DOCBUS_BENCH_ESSENTIALS_DB": str(database)}
    with serving(cmd, server_env, port, "/healthz", work / "essentials.log"):
        yield port


@dataclass
class Deployment:
    """A running docbus (its own data directory); ``drain`` waits until its outbox is empty."""

    port: int
    data: Path
    env: dict[str, str]  # for wrk: carries the deployment's own agency key (BENCH_KEY)

    def drain(self) -> float:
        started = time.perf_counter()
        while httpx.get(f"http://127.0.0.1:{self.port}/readyz", timeout=10).json()["outbox_backlog"] > 0:
            time.sleep(0.1)
        return time.perf_counter() - started

    def stored(self) -> int:
        with sqlite3.connect(self.data / "docbus.sqlite3") as conn:
            return int(conn.execute("SELECT count(*) FROM messages").fetchone()[0])


@contextlib.contextmanager
def docbus_server(
    workers: int,
    env: dict[str, str],
    work: Path,
    *,
    label: str,
    role: str = "gateway",
    extra: dict[str, str] | None = None,
    with_worker: bool = False,
) -> Iterator[Deployment]:
    """docbus on the embedded default database, its own data directory.

    ``role="gateway"``: ``docbus gateway`` with its relay off, so its processes do intake only; with
    ``with_worker`` a ``docbus worker`` publishes what they accept (the deployment for a 2-core machine: the
    worker's publishing runs beside intake instead of inside it). ``role="serve"``: everything in one process."""
    data = work / f"docbus-{label}-{workers}"
    shutil.rmtree(data, ignore_errors=True)
    env = {**env, "DOCBUS_DATA_DIR": str(data), **(extra or {})}
    env.pop("DOCBUS_DATABASE_URL", None)
    if "DOCBUS_KAFKA_BOOTSTRAP" not in (extra or {}):
        env.pop("DOCBUS_KAFKA_BOOTSTRAP", None)
    env["BENCH_KEY"] = register(env)
    port = free_port()
    cmd = [str(BIN / "docbus"), role, "--port", str(port), "--workers", str(workers), "--log-level", "warning"]
    server_env = {**env, "DOCBUS_RELAY_ENABLED": "false"} if role == "gateway" else env
    worker_cmd = [str(BIN / "docbus"), "worker", "--log-level", "warning"]
    with contextlib.ExitStack() as stack:
        if with_worker:
            stack.enter_context(running(worker_cmd, env, work / f"worker-{label}.log"))
        stack.enter_context(serving(cmd, server_env, port, "/healthz", work / f"docbus-{label}.log"))
        yield Deployment(port, data, env)


@dataclass
class Rounds:
    """Each contender's results over interleaved rounds. The machine's speed drifts during a run (it is shared),
    so contenders take turns, the order flipping every round, and each round's ratio compares two measurements
    taken next to each other; the median of those ratios is what the run reports."""

    results: dict[str, list[Result]]

    def rates(self, name: str) -> list[float]:
        return [r.rate for r in self.results[name]]

    def median_rate(self, name: str) -> float:
        return median(self.rates(name))

    def median_p(self, name: str, attr: str) -> float:
        return median([float(getattr(r, attr)) for r in self.results[name]])

    def ratio(self, num: str, den: str) -> float:
        return median([a.rate / b.rate for a, b in zip(self.results[num], self.results[den], strict=True)])

    def spread(self, name: str) -> str:
        return "/".join(f"{rate:.0f}" for rate in self.rates(name))


def interleaved(
    contenders: dict[str, tuple[int, dict[str, str]]],
    args: argparse.Namespace,
    after: dict[str, Callable[[], object]] | None = None,
) -> Rounds:
    """Warm every contender (port, wrk's environment) up, then ``args.rounds`` rounds of one wrk run each;
    ``after[name]`` runs after each of that contender's runs (a drain, so a backlog never spills into the next
    contender's turn)."""
    after = after or {}
    for name, (port, env) in contenders.items():
        wrk(port, args.warmup, args.connections, env)
        after.get(name, lambda: None)()
    results: dict[str, list[Result]] = {name: [] for name in contenders}
    order = list(contenders)
    for round_no in range(args.rounds):
        for name in order if round_no % 2 == 0 else reversed(order):
            port, env = contenders[name]
            results[name].append(wrk(port, args.duration, args.connections, env))
            after.get(name, lambda: None)()
    return Rounds(results)


def median(values: list[float]) -> float:
    ordered = sorted(values)
    middle = len(ordered) // 2
    return ordered[middle] if len(ordered) % 2 else (ordered[middle - 1] + ordered[middle]) / 2


def kafka_phase(args: argparse.Namespace, env: dict[str, str], work: Path, workers: int) -> None:
    """Intake-only vs intake-to-Kafka (interleaved rounds) vs Kafka's own producer ceiling, then forwarding at
    half the intake-to-Kafka rate."""
    kafka_env = {"DOCBUS_KAFKA_BOOTSTRAP": args.kafka, "DOCBUS_TOPIC_PREFIX": f"bench{int(time.time())}"}
    drains: list[float] = []
    with (
        docbus_server(workers, env, work, label="intake-only", extra=kafka_env) as only,
        docbus_server(workers, env, work, label="kafka", extra=kafka_env, with_worker=True) as to_kafka,
    ):
        rounds = interleaved(
            {"only": (only.port, only.env), "kafka": (to_kafka.port, to_kafka.env)},
            args,
            after={"kafka": lambda: drains.append(to_kafka.drain())},
        )
        stored = to_kafka.stored()
    raw = raw_producer(args)
    kafka_rate = rounds.median_rate("kafka")
    print(
        f"intake-only {rounds.median_rate('only'):8.0f} msg/s (rounds {rounds.spread('only')}, "
        f"p99 {rounds.median_p('only', 'p99_ms'):.2f} ms) | intake-to-Kafka {kafka_rate:8.0f} msg/s "
        f"(rounds {rounds.spread('kafka')}, p99 {rounds.median_p('kafka', 'p99_ms'):.2f} ms; all {stored} published, "
        f"the last at most {max(drains):.1f} s after a run ended) | raw producer {raw:8.0f} msg/s"
    )
    print(
        f"ratios (median of the rounds): intake-to-Kafka / intake-only {rounds.ratio('kafka', 'only'):.2f}; "
        f"intake-to-Kafka / raw producer {kafka_rate / raw:.2f}",
        flush=True,
    )
    forwarding_phase(args, env, work, workers, kafka_rate / 2)


def raw_producer(args: argparse.Namespace) -> float:
    """Kafka's own ProducerPerformance (same jars, acks=all, idempotent) with records of the same size, into a
    topic created like docbus creates its own (3 partitions; the broker does not auto-create topics)."""
    kafka_sh = ["bash", str(REPO / "deploy" / "kafka" / "kafka.sh")]
    topic = f"bench-raw-{int(time.time())}"
    create = ["run-class", "org.apache.kafka.tools.TopicCommand", "--bootstrap-server", args.kafka]
    subprocess.run(
        [*kafka_sh, *create, "--create", "--topic", topic, "--partitions", "3", "--replication-factor", "1"],
        capture_output=True,
        check=True,
    )
    perf = ["perf-producer", "--bootstrap", args.kafka, "--topic", topic, "--num-records", "100000"]
    out = subprocess.run(
        [*kafka_sh, *perf, "--record-size", str(args.size)], capture_output=True, text=True, check=True, timeout=600
    ).stdout
    rates = re.findall(r"([\d.]+) records/sec", out)
    if not rates:
        raise RuntimeError(f"unexpected ProducerPerformance output:\n{out}")
    return float(rates[-1])


def forwarding_phase(args: argparse.Namespace, env: dict[str, str], work: Path, workers: int, rate: float) -> None:
    """POST at ``rate`` (half the intake maximum) with forwarding to the national axis simulator; report delivered
    msgs/s and POST→DELIVERED latency from the timelines."""
    sim_port = free_port()
    sim_cmd = [
        str(BIN / "docbus"),
        "sim",
        "national-axis",
        "--port",
        str(sim_port),
        "--receipt-delays",
        "600,601,602",
        "--log-level",
        "warning",
    ]
    routes = work / "routes.toml"
    routes.write_text(
        '[[destination]]\nname = "national_axis"\n\n[[rule]]\nany = true\ndestination = "national_axis"\n'
    )
    connections = 32
    extra = {
        "DOCBUS_KAFKA_BOOTSTRAP": args.kafka,
        "DOCBUS_TOPIC_PREFIX": f"benchfwd{int(time.time())}",
        "DOCBUS_ROUTES_FILE": str(routes),
        "DOCBUS_ADAPTERS__NATIONAL_AXIS__URL": f"http://127.0.0.1:{sim_port}",
        "DOCBUS_ADAPTERS__NATIONAL_AXIS__SYSTEM_ID": "docbus",
        "DOCBUS_ADAPTERS__NATIONAL_AXIS__SECRET": "docbus-secret",
        "BENCH_RATE": f"{rate:.0f}",  # open loop: each wrk thread sends on a fixed schedule (post.lua)
        "BENCH_THREADS": str(WRK_THREADS),
    }
    data = work / "docbus-forwarding"
    shutil.rmtree(data, ignore_errors=True)
    fenv = {**env, "DOCBUS_DATA_DIR": str(data), **extra}
    fenv["BENCH_KEY"] = register(fenv)
    port = free_port()
    cmd = [str(BIN / "docbus"), "gateway", "--port", str(port), "--workers", str(workers), "--log-level", "warning"]
    worker_cmd = [str(BIN / "docbus"), "worker", "--log-level", "warning"]
    # One worker publishes and another forwards, each on its own event loop (see README, "Scaling out"); with
    # --one-worker a single worker does both.
    split = not args.one_worker
    relay_env = {**fenv, "DOCBUS_FORWARDING_ENABLED": "false"}
    forwarding_env = {**fenv, "DOCBUS_RELAY_ENABLED": "false"} if split else fenv
    with (
        serving(sim_cmd, fenv, sim_port, "/_sim/faults", work / "sim.log") as sim,
        running(worker_cmd, forwarding_env, work / "worker.log") as worker,
        running(worker_cmd, relay_env, work / "relay.log") if split else contextlib.nullcontext() as relay,
        serving(cmd, {**fenv, "DOCBUS_RELAY_ENABLED": "false"}, port, "/healthz", work / "docbus.log") as gateway,
    ):
        # Warm-up at the same pace (connections opened, caches and the broker's logs warm), then everything
        # delivered; the steady state is what is measured.
        wrk(port, args.warmup, connections, fenv)
        wait_until_delivered(data, 120)
        windows: list[datetime] = []  # each round's start; the last entry closes the last round
        posts: list[Result] = []
        groups = {"gateway": gateway.pid, "worker": worker.pid, "simulator": sim.pid}
        if relay is not None:
            groups["publishing worker"] = relay.pid
        cpu_before, busy_before = role_cpu_seconds(groups), machine_busy_seconds()
        for _ in range(args.rounds):
            windows.append(datetime.now(UTC).replace(tzinfo=None))  # the store keeps UTC without an offset
            posts.append(wrk(port, args.duration, connections, fenv))
            wait_until_delivered(data, 120)  # a backlog is measured in its own round, never carried into the next
        windows.append(datetime.now(UTC).replace(tzinfo=None))
        cpu_after, busy_after = role_cpu_seconds(groups), machine_busy_seconds()
    rounds = [forwarding_round(data, start, end) for start, end in itertools.pairwise(windows)]
    pooled = sorted(ms for r in rounds for ms in r.latencies_ms)
    pooled_written = sorted(ms for r in rounds for ms in r.written_ms)
    delivered = sum(len(r.latencies_ms) for r in rounds)
    print(
        f"forwarding at {rate:.0f} msg/s offered (a fixed schedule over {connections} connections), "
        f"{args.rounds} rounds: accepted {median([r.accepted_rate for r in rounds]):.0f} msg/s "
        f"(rounds {'/'.join(f'{r.accepted_rate:.0f}' for r in rounds)}; POST p99 "
        f"{'/'.join(f'{p.p99_ms:.1f}' for p in posts)} ms), delivered {median([r.delivered_rate for r in rounds]):.0f} "
        f"msg/s ({delivered}/{sum(r.accepted for r in rounds)}), ratio {median([r.ratio for r in rounds]):.2f}; "
        f"POST→DELIVERED over all rounds p50 {percentile(pooled, 0.5):.0f} ms p99 {percentile(pooled, 0.99):.0f} ms "
        f"(rounds' p99 {'/'.join(f'{percentile(r.latencies_ms, 0.99):.0f}' for r in rounds)} ms; until the DELIVERED "
        f"event was written p50 {percentile(pooled_written, 0.5):.0f} ms p99 {percentile(pooled_written, 0.99):.0f} "
        "ms)",
        flush=True,
    )
    print(
        "POST→DELIVERED by stage (intake: arrival to commit; to Kafka: to the broker's acknowledgement; to the "
        "worker: to the start of the delivery; at the axis: to its answer), over all rounds: "
        + stage_summary([doc for r in rounds for doc in r.stages_ms]),
        flush=True,
    )
    # Where the machine's CPU went: the axis simulator and the broker share it with docbus here.
    per_document = {role: (cpu_after[role] - cpu_before[role]) * 1000 / max(delivered, 1) for role in cpu_after}
    busy = (busy_after[0] - busy_before[0]) / max(busy_after[1] - busy_before[1], 1e-9)
    print(
        "forwarding CPU per delivered document over the rounds and their drains: "
        + ", ".join(f"{role} {ms:.2f} ms" for role, ms in per_document.items())
        + f" ({sum(per_document.values()):.2f} ms in all); the machine was busy {busy:.0%} of the time of its "
        f"{os.cpu_count()} cores",
        flush=True,
    )


# The stages of POST→DELIVERED, read from each document's timeline: arrival → its commit (the ACCEPTED event
# written) → the broker's acknowledgement (PUBLISHED) → the start of its delivery (FORWARDING) → the axis' answer
# (DELIVERED).
STAGES = ("intake", "to Kafka", "to the worker", "at the axis")


@dataclass(frozen=True)
class ForwardingRound:
    """One forwarding round, read back from the timelines: documents accepted in the round's window, and for those
    delivered the time from arrival to the axis' acknowledgement (the DELIVERED event's ``at``), to the moment
    that event was written (its ``recorded_at``: the worker writes events in batches), and in each of ``STAGES``."""

    accepted: int
    accepted_rate: float
    delivered_rate: float
    latencies_ms: list[float]
    written_ms: list[float]
    stages_ms: list[tuple[float, ...]]  # per delivered document (unsorted), one duration per stage

    @property
    def ratio(self) -> float:
        return self.delivered_rate / self.accepted_rate


def forwarding_round(data: Path, start: datetime, end: datetime) -> ForwardingRound:
    window = (start.isoformat(sep=" "), end.isoformat(sep=" "))
    with sqlite3.connect(data / "docbus.sqlite3") as conn:
        # Stored times are fixed-width text (microseconds always written), so MIN and MAX order them correctly.
        timelines = conn.execute(
            "SELECT m.received_at,"
            " MIN(CASE WHEN e.type = 'ACCEPTED' THEN e.recorded_at END),"
            " MIN(CASE WHEN e.type = 'PUBLISHED' THEN e.at END),"
            " MAX(CASE WHEN e.type = 'FORWARDING' THEN e.at END),"
            " MIN(CASE WHEN e.type = 'DELIVERED' THEN e.at END),"
            " MIN(CASE WHEN e.type = 'DELIVERED' THEN e.recorded_at END) "
            "FROM messages m JOIN events e ON e.message_id = m.id "
            "WHERE m.kind = 'edoc' AND m.received_at >= ? AND m.received_at < ? GROUP BY m.id",
            window,
        ).fetchall()
    accepted = len(timelines)
    rows = [[None if t is None else datetime.fromisoformat(t) for t in row] for row in timelines if row[4] is not None]
    if not rows:
        raise RuntimeError(f"nothing was delivered in the round from {start} to {end}")
    first = min(row[0] for row in rows)
    last = max(row[4] for row in rows)

    def ms(a: datetime, b: datetime) -> float:
        return (b - a).total_seconds() * 1000

    return ForwardingRound(
        accepted=accepted,
        accepted_rate=accepted / max((max(row[0] for row in rows) - first).total_seconds(), 1e-9),
        delivered_rate=len(rows) / max((last - first).total_seconds(), 1e-9),
        latencies_ms=sorted(ms(row[0], row[4]) for row in rows),
        written_ms=sorted(ms(row[0], row[5]) for row in rows),
        stages_ms=[
            tuple(ms(a, b) for a, b in itertools.pairwise(row[:5])) for row in rows if all(t is not None for t in row)
        ],
    )


def stage_summary(stages_ms: list[tuple[float, ...]]) -> str:
    """Each stage's p50/p90/p99, and where the slowest 1% of documents (end to end) spent their time."""
    if not stages_ms:
        return "no document has every stage on its timeline"
    columns = [sorted(column) for column in zip(*stages_ms, strict=True)]
    spread = ", ".join(
        f"{name} {'/'.join(f'{percentile(c, q):.0f}' for q in (0.5, 0.9, 0.99))}"
        for name, c in zip(STAGES, columns, strict=True)
    )
    slowest = sorted(stages_ms, key=sum)[-max(1, len(stages_ms) // 100) :]
    means = ", ".join(f"{name} {sum(doc[i] for doc in slowest) / len(slowest):.0f}" for i, name in enumerate(STAGES))
    return f"p50/p90/p99 ms: {spread}; the slowest 1% ({len(slowest)} documents) spent on average {means} ms"


def percentile(ordered: list[float], fraction: float) -> float:
    """The value below which ``fraction`` of the sorted samples lie (nearest rank)."""
    return ordered[max(0, math.ceil(len(ordered) * fraction) - 1)]


def _processes() -> Iterator[tuple[int, list[str], str]]:
    """(process group, the stat fields after the command name, command line) of every process still there."""
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            fields = (entry / "stat").read_text().rsplit(")", 1)[1].split()
            cmdline = (entry / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
        except OSError:  # gone meanwhile
            continue
        yield int(fields[2]), fields, cmdline


def role_cpu_seconds(groups: dict[str, int]) -> dict[str, float]:
    """User plus system CPU seconds used so far by each role: the processes of its process group (a server's
    workers are in its group), and ``kafka``: every Kafka broker on the machine (kafka.sh's group, not ours)."""
    ticks = os.sysconf("SC_CLK_TCK")
    used = dict.fromkeys([*groups, "kafka"], 0.0)
    by_group = {group: role for role, group in groups.items()}
    for group, fields, cmdline in _processes():
        role = by_group.get(group) or ("kafka" if "kafka.Kafka " in cmdline else None)
        if role is not None:
            used[role] += (int(fields[11]) + int(fields[12])) / ticks
    return used


def machine_busy_seconds() -> tuple[float, float]:
    """(busy, elapsed) CPU seconds of the whole machine so far, summed over its cores (``/proc/stat``)."""
    values = [int(v) for v in Path("/proc/stat").read_text().splitlines()[0].split()[1:]]
    idle = values[3] + values[4]  # idle + iowait
    ticks = os.sysconf("SC_CLK_TCK")
    return (sum(values) - idle) / ticks, sum(values) / ticks


def wait_until_delivered(data: Path, seconds: float) -> None:
    deadline = time.time() + seconds
    while time.time() < deadline:
        with sqlite3.connect(data / "docbus.sqlite3") as conn:
            delivered = conn.execute("SELECT count(*) FROM events WHERE type = 'DELIVERED'").fetchone()[0]
            total = conn.execute("SELECT count(*) FROM messages WHERE kind = 'edoc'").fetchone()[0]
        if delivered >= total:
            return
        time.sleep(0.2)


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
    parser.add_argument("--rounds", type=int, default=3, help="interleaved runs of each contender in a comparison")
    parser.add_argument("--connections", type=int, default=64)
    parser.add_argument("--workers", default="1,2")
    parser.add_argument("--size", type=int, default=10 * 1024)
    parser.add_argument("--kafka", help="bootstrap servers: also measure intake-to-Kafka, the raw producer, forwarding")
    parser.add_argument(
        "--forwarding-only",
        type=float,
        metavar="RATE",
        help="with --kafka: measure only forwarding, at RATE msg/s offered, with the first of --workers gateways",
    )
    parser.add_argument("--keep", action="store_true", help="keep the working folder (databases, logs) for a look")
    parser.add_argument(
        "--one-worker",
        action="store_true",
        help="forwarding with one worker that publishes and forwards, instead of one worker for each",
    )
    args = parser.parse_args()
    if args.rounds < 1:
        parser.error("--rounds must be at least 1")
    if args.forwarding_only and not args.kafka:
        parser.error("--forwarding-only needs --kafka")
    if not shutil.which("wrk"):
        print("wrk is not installed (apt-get install -y wrk)", file=sys.stderr)
        return 2
    work = Path(tempfile.mkdtemp(prefix="docbus-bench-"))
    template = work / "template.edxml"
    make_template(args.size, template)
    env = {**os.environ, "BENCH_TEMPLATE": str(template), "PATH": f"{BIN}:{os.environ['PATH']}"}
    if args.forwarding_only:
        forwarding_phase(args, env, work, int(args.workers.split(",")[0]), args.forwarding_only)
        if args.keep:
            print(f"kept {work}")
        else:
            shutil.rmtree(work, ignore_errors=True)
        return 0
    print(f"# intake benchmark: {args.size} B edXML, {args.connections} connections, {args.duration:.0f}s per run")
    best: tuple[int, Rounds] | None = None
    for workers in [int(w) for w in args.workers.split(",")]:
        with (
            noop_server(workers, env, work) as noop,
            essentials_server(workers, env, work) as essentials,
            docbus_server(workers, env, work, label="gateway") as gateway,
        ):
            rounds = interleaved(
                {"docbus": (gateway.port, gateway.env), "noop": (noop, env), "essentials": (essentials, env)}, args
            )
            stored = gateway.stored()
        failed = sum(r.failed for r in rounds.results["docbus"])
        print(
            f"workers={workers}  docbus gateway {rounds.median_rate('docbus'):8.0f} msg/s"
            f" p50 {rounds.median_p('docbus', 'p50_ms'):6.2f} ms p99 {rounds.median_p('docbus', 'p99_ms'):6.2f} ms"
            f" (rounds {rounds.spread('docbus')}; failed {failed}, stored {stored})  |  no-op"
            f" {rounds.median_rate('noop'):8.0f} msg/s p50 {rounds.median_p('noop', 'p50_ms'):6.2f} ms"
            f" p99 {rounds.median_p('noop', 'p99_ms'):6.2f} ms (rounds {rounds.spread('noop')})"
            f"  |  ratio {rounds.ratio('docbus', 'noop'):.2f} (median of the rounds)",
            flush=True,
        )
        essentials_failed = sum(r.failed for r in rounds.results["essentials"])
        print(
            f"workers={workers}  essential work alone {rounds.median_rate('essentials'):8.0f} msg/s"
            f" p50 {rounds.median_p('essentials', 'p50_ms'):6.2f} ms"
            f" p99 {rounds.median_p('essentials', 'p99_ms'):6.2f} ms (rounds {rounds.spread('essentials')};"
            f" failed {essentials_failed})  |  essentials/no-op {rounds.ratio('essentials', 'noop'):.2f}"
            f"  |  docbus/essentials {rounds.ratio('docbus', 'essentials'):.2f} (medians of the rounds)",
            flush=True,
        )
        if best is None or rounds.median_rate("docbus") > best[1].median_rate("docbus"):
            best = (workers, rounds)
    assert best is not None
    best_workers, best_rounds = best
    print(
        f"best: workers={best_workers} docbus/no-op ratio {best_rounds.ratio('docbus', 'noop'):.2f}, "
        f"docbus p99 {best_rounds.median_p('docbus', 'p99_ms'):.2f} ms"
    )
    with docbus_server(1, env, work, label="serve", role="serve") as serve_deployment:
        wrk(serve_deployment.port, args.warmup, args.connections, serve_deployment.env)
        serve = wrk(serve_deployment.port, args.duration, args.connections, serve_deployment.env)
        stored = serve_deployment.stored()
    print(
        f"for comparison: docbus serve (every role in one process, embedded broker) {serve.rate:8.0f} msg/s"
        f" p50 {serve.p50_ms:6.2f} ms p99 {serve.p99_ms:6.2f} ms (failed {serve.failed}, stored {stored})",
        flush=True,
    )
    if args.kafka:
        kafka_phase(args, env, work, best_workers)
    for name, ms in hostile_latency(work, env).items():
        print(f"refusal latency {name}: {ms:.1f} ms")
    if args.keep:
        print(f"kept {work}")
    else:
        shutil.rmtree(work, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
