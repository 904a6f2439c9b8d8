#!/usr/bin/env bash
# Runs the benchmarks with the project's virtualenv; installs wrk from Debian's packages when missing.
set -euo pipefail
cd "$(dirname "$0")/../.."
command -v wrk >/dev/null || { apt-get update -qq && apt-get install -y -qq wrk; }
.venv/bin/python tests/benchmark/intake_bench.py "$@"
