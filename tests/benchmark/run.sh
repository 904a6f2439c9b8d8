#!/usr/bin/env bash
# Runs the benchmarks with the project's virtualenv: intake vs a no-op endpoint, then (with a Kafka broker this
# script starts and stops) intake-to-Kafka vs intake-only vs Kafka's own producer, and forwarding.
# Installs wrk from Debian's packages when missing. Extra arguments go to intake_bench.py.
set -euo pipefail
cd "$(dirname "$0")/../.."
command -v wrk >/dev/null || { apt-get update -qq && apt-get install -y -qq wrk; }
KAFKA_DIR="${DOCBUS_BENCH_KAFKA_DIR:-/tmp/docbus-bench-kafka}"
trap 'bash deploy/kafka/kafka.sh stop --dir "$KAFKA_DIR" >/dev/null 2>&1 || true' EXIT
# Below the kernel's ephemeral port range (32768-60999): a client still retrying a broker of an earlier run can
# otherwise be handed the broker's own port for its end of a connection, and the new broker cannot bind it.
BOOTSTRAP="$(bash deploy/kafka/kafka.sh start --dir "$KAFKA_DIR" --port 29092 | tail -n 1)"
.venv/bin/python tests/benchmark/intake_bench.py --kafka "$BOOTSTRAP" "$@"
