#!/usr/bin/env bash
# The whole test suite against real services: starts PostgreSQL and Apache Kafka on loopback, runs lint,
# type checks and pytest, and stops the services again whatever happens. Extra arguments go to pytest.
set -euo pipefail
cd "$(dirname "$0")/.."
BIN=.venv/bin
export DOCBUS_PG_DIR="${DOCBUS_PG_DIR:-/tmp/docbus-test-pg}"
export DOCBUS_KAFKA_DIR="${DOCBUS_KAFKA_DIR:-/tmp/docbus-test-kafka}"

cleanup() {
  bash deploy/kafka/kafka.sh stop >/dev/null 2>&1 || true
  bash deploy/postgres/postgres.sh stop >/dev/null 2>&1 || true
}
trap cleanup EXIT

echo "== starting PostgreSQL"
DOCBUS_TEST_POSTGRES_URL="$(bash deploy/postgres/postgres.sh start | tail -n 1)"
export DOCBUS_TEST_POSTGRES_URL
export DOCBUS_TEST_POSTGRES_CA_FILE="$DOCBUS_PG_DIR/tls/ca.pem"  # the same server over TLS (postgres.sh makes it)
echo "   $DOCBUS_TEST_POSTGRES_URL"

echo "== starting Apache Kafka (KRaft, one broker; tests that break clusters start their own)"
DOCBUS_TEST_KAFKA_BOOTSTRAP="$(bash deploy/kafka/kafka.sh start | tail -n 1)"
export DOCBUS_TEST_KAFKA_BOOTSTRAP
# The same broker's SASL_SSL listener (SCRAM-SHA-512 over TLS): its client settings, written by kafka.sh.
export DOCBUS_TEST_KAFKA_SECURE_ENV="$DOCBUS_KAFKA_DIR/secure-client.env"
echo "   $DOCBUS_TEST_KAFKA_BOOTSTRAP (SASL_SSL: $(sed -n 's/^DOCBUS_KAFKA_BOOTSTRAP=//p' "$DOCBUS_TEST_KAFKA_SECURE_ENV"))"

echo "== nginx (the TLS-terminating proxy in front of the gateway in some tests; not started here)"
DOCBUS_TEST_NGINX="$(bash deploy/nginx/ensure-nginx.sh)"
export DOCBUS_TEST_NGINX
echo "   $DOCBUS_TEST_NGINX"

echo "== lint and types"
"$BIN/ruff" check bus adapters connectors schemas tests
"$BIN/mypy" -p docbus

echo "== tests"
"$BIN/pytest" "$@"
