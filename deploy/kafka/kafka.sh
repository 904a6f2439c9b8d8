#!/usr/bin/env bash
# Run a throwaway Apache Kafka cluster (KRaft, combined broker+controller
# nodes) on 127.0.0.1 from the jars Maven fetches, for development, tests
# and CI.  See deploy/README.md.
#
#   kafka.sh fetch
#   kafka.sh start [--brokers N] [--dir DIR] [--port BASE]
#   kafka.sh stop [--dir DIR]
#   kafka.sh stop-broker K [--kill] [--dir DIR]
#   kafka.sh start-broker K [--dir DIR]
#   kafka.sh status [--dir DIR]
#   kafka.sh perf-producer --bootstrap B --topic T --num-records N --record-size S
#                          [--throughput T] [--prop KEY=VALUE]...
#   kafka.sh run-class CLASS [ARG]...
#
# start, start-broker and status print the bootstrap servers as the last
# line of stdout; progress and errors go to stderr.
#
# Each broker also listens for clients that must authenticate, as in
# production: SASL_SSL (SCRAM-SHA-512 over TLS) on BASE+200+K-1, with a CA made
# for the cluster. DIR/secure-client.env holds the DOCBUS_KAFKA_* settings of
# a client of that listener (user docbus, its password, the CA file).
set -euo pipefail

SCRIPT_DIR=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
POM="$SCRIPT_DIR/pom.xml"
BROKER_LOG4J="$SCRIPT_DIR/log4j2.properties"
# shellcheck source=../dev-tls.sh
. "$SCRIPT_DIR/../dev-tls.sh"
TOOLS_LOG4J="$SCRIPT_DIR/tools-log4j2.properties"

KAFKA_VERSION=$(sed -n 's:.*<kafka\.version>\(.*\)</kafka\.version>.*:\1:p' "$POM" | head -n 1)
CACHE="${DOCBUS_KAFKA_CACHE:-$HOME/.cache/docbus/kafka-$KAFKA_VERSION}"
LIBS="$CACHE/libs"
MARKER="$CACHE/complete"

DEFAULT_DIR="${DOCBUS_KAFKA_DIR:-/tmp/docbus-kafka}"
DEFAULT_PORT=19092
CONTROLLER_PORT_OFFSET=100
SECURE_PORT_OFFSET=200
SCRAM_USER=docbus
START_TIMEOUT="${DOCBUS_KAFKA_START_TIMEOUT:-90}"
STOP_TIMEOUT=30
# Per-broker JVM options; three brokers have to fit on a 2-core machine.
read -r -a BROKER_HEAP <<<"${DOCBUS_KAFKA_HEAP:--Xms256m -Xmx512m}"
BROKER_JVM_OPTS=(-XX:+UseG1GC -XX:MaxGCPauseMillis=20 -XX:InitiatingHeapOccupancyPercent=35
  -XX:+ExplicitGCInvokesConcurrent -XX:+ExitOnOutOfMemoryError -Djava.awt.headless=true)
# Short-lived admin tools: start fast, stay small.
TOOL_JVM_OPTS=(-Xmx256m -XX:+UseSerialGC -XX:TieredStopAtLevel=1 -Djava.awt.headless=true
  "-Dlog4j2.configurationFile=$TOOLS_LOG4J")

log() { printf 'kafka.sh: %s\n' "$*" >&2; }
die() {
  log "error: $*"
  exit 1
}

usage() {
  sed -n '2,/^set -euo/p' "${BASH_SOURCE[0]}" | sed -e '/^set -euo/d' -e 's/^# \{0,1\}//' >&2
  exit 2
}

# ---------------------------------------------------------------- fetch --

pom_digest() { cat "$POM" "$BROKER_LOG4J" | sha256sum | cut -d' ' -f1; }  # contents only: every checkout shares the cache

cache_complete() {
  [[ -f "$MARKER" && -d "$LIBS" ]] && [[ "$(cat "$MARKER")" == "$(pom_digest)" ]]
}

check_java() {
  command -v java >/dev/null || die "java not found (Kafka $KAFKA_VERSION needs Java 17 or newer)"
  local spec
  spec=$(java -XshowSettings:properties -version 2>&1 | sed -n 's/^ *java\.specification\.version = //p')
  [[ "${spec%%.*}" =~ ^[0-9]+$ && "${spec%%.*}" -ge 17 ]] ||
    die "Kafka $KAFKA_VERSION needs Java 17 or newer, found '${spec:-unknown}'"
}

cmd_fetch() {
  if cache_complete; then
    log "Kafka $KAFKA_VERSION jars already in $LIBS"
    return 0
  fi
  command -v mvn >/dev/null || die "mvn not found (apt-get install -y maven)"
  log "fetching Kafka $KAFKA_VERSION jars with Maven into $LIBS"
  mkdir -p "$CACHE"
  local tmp="$CACHE/libs.partial.$$"
  rm -rf "$tmp"
  if ! mvn -B -q -Dstyle.color=never -f "$POM" dependency:copy-dependencies -DincludeScope=runtime \
    -DoutputDirectory="$tmp" >"$CACHE/fetch.log" 2>&1; then
    cat "$CACHE/fetch.log" >&2
    rm -rf "$tmp"
    die "Maven could not fetch the Kafka $KAFKA_VERSION jars (Maven output above, also in $CACHE/fetch.log)"
  fi
  [[ -f "$tmp/kafka_2.13-$KAFKA_VERSION.jar" && -f "$tmp/kafka-tools-$KAFKA_VERSION.jar" ]] || {
    rm -rf "$tmp"
    die "Maven finished but the Kafka jars are missing from $tmp"
  }
  rm -rf "$LIBS"
  mv "$tmp" "$LIBS"
  pom_digest >"$MARKER"
  log "fetched $(find "$LIBS" -name '*.jar' | wc -l) jars"
}

ensure_fetched() {
  cache_complete || cmd_fetch
}

run_tool() { # CLASS ARGS...
  java "${TOOL_JVM_OPTS[@]}" -cp "$LIBS/*" "$@"
}

cmd_run_class() {
  [[ $# -ge 1 ]] || die "run-class needs a class name"
  ensure_fetched
  run_tool "$@"
}

# --------------------------------------------------------- cluster state --

DIR=""
BROKERS=""
PORT=""

broker_dir() { printf '%s/broker%s' "$DIR" "$1"; }
pid_file() { printf '%s/broker%s.pid' "$DIR" "$1"; }
broker_port() { echo $((PORT + $1 - 1)); }
controller_port() { echo $((PORT + CONTROLLER_PORT_OFFSET + $1 - 1)); }
secure_port() { echo $((PORT + SECURE_PORT_OFFSET + $1 - 1)); }

bootstrap_servers() {
  local k out=""
  for ((k = 1; k <= BROKERS; k++)); do
    out+="${out:+,}127.0.0.1:$(broker_port "$k")"
  done
  printf '%s\n' "$out"
}

load_cluster() { # sets BROKERS and PORT from DIR/cluster.env; fails if absent
  [[ -f "$DIR/cluster.env" ]] || return 1
  BROKERS=$(sed -n 's/^BROKERS=//p' "$DIR/cluster.env")
  PORT=$(sed -n 's/^PORT=//p' "$DIR/cluster.env")
  [[ "$BROKERS" =~ ^[0-9]+$ && "$PORT" =~ ^[0-9]+$ ]] || die "$DIR/cluster.env is damaged"
}

require_cluster() {
  load_cluster || die "no Kafka cluster set up in $DIR (run: kafka.sh start --dir $DIR)"
}

broker_pid() { # prints the pid of broker K if it is running
  local f pid
  f=$(pid_file "$1")
  [[ -f "$f" ]] || return 1
  pid=$(cat "$f")
  [[ "$pid" =~ ^[0-9]+$ ]] || return 1
  kill -0 "$pid" 2>/dev/null || return 1
  # Guard against a recycled pid: the process must be this broker's JVM.
  tr '\0' ' ' <"/proc/$pid/cmdline" 2>/dev/null | grep -qF "$(broker_dir "$1")/server.properties" || return 1
  echo "$pid"
}

pidfile_ids() { # ids of the brokers that have a pid file in DIR
  local f
  for f in "$DIR"/broker*.pid; do
    [[ -e "$f" ]] || continue
    f=${f##*/broker}
    echo "${f%.pid}"
  done
}

check_broker_id() {
  [[ "$1" =~ ^[0-9]+$ && "$1" -ge 1 && "$1" -le "$BROKERS" ]] ||
    die "broker id must be between 1 and $BROKERS, got '$1'"
}

port_in_use() {
  (: <>"/dev/tcp/127.0.0.1/$1") 2>/dev/null
}

write_properties() { # K
  local k=$1 rf min_isr voters="" j bdir
  rf=$((BROKERS < 3 ? BROKERS : 3))
  min_isr=$((rf >= 3 ? 2 : 1))
  for ((j = 1; j <= BROKERS; j++)); do
    voters+="${voters:+,}$j@127.0.0.1:$(controller_port "$j")"
  done
  bdir=$(broker_dir "$k")
  mkdir -p "$bdir/data"
  cat >"$bdir/server.properties" <<EOF
# Written by deploy/kafka/kafka.sh: broker $k of $BROKERS (KRaft, combined mode).
process.roles=broker,controller
node.id=$k
controller.quorum.voters=$voters
listeners=PLAINTEXT://127.0.0.1:$(broker_port "$k"),CONTROLLER://127.0.0.1:$(controller_port "$k"),SASL_SSL://127.0.0.1:$(secure_port "$k")
advertised.listeners=PLAINTEXT://127.0.0.1:$(broker_port "$k"),CONTROLLER://127.0.0.1:$(controller_port "$k"),SASL_SSL://127.0.0.1:$(secure_port "$k")
inter.broker.listener.name=PLAINTEXT
controller.listener.names=CONTROLLER
listener.security.protocol.map=PLAINTEXT:PLAINTEXT,CONTROLLER:PLAINTEXT,SASL_SSL:SASL_SSL
log.dirs=$bdir/data

# Clients that authenticate: SCRAM-SHA-512 over TLS (the user is made when the
# storage is formatted; the key and certificate chain are in one PEM file).
sasl.enabled.mechanisms=SCRAM-SHA-512
listener.name.sasl_ssl.scram-sha-512.sasl.jaas.config=org.apache.kafka.common.security.scram.ScramLoginModule required;
listener.name.sasl_ssl.ssl.keystore.type=PEM
listener.name.sasl_ssl.ssl.keystore.location=$DIR/tls/broker.pem

num.partitions=1
default.replication.factor=$rf
min.insync.replicas=$min_isr
offsets.topic.replication.factor=$rf
transaction.state.log.replication.factor=$rf
transaction.state.log.min.isr=$min_isr
share.coordinator.state.topic.replication.factor=$rf
share.coordinator.state.topic.min.isr=$min_isr
auto.create.topics.enable=false
group.initial.rebalance.delay.ms=0
unclean.leader.election.enable=false
# A killed broker is fenced (its partitions fail over) and may register again
# after the session timeout: 6 s instead of the default 9 s.
broker.heartbeat.interval.ms=1000
broker.session.timeout.ms=6000

# Small machine: fewer threads than the defaults.
num.network.threads=2
num.io.threads=4
num.recovery.threads.per.data.dir=1
EOF
}

make_tls() { # a CA for the cluster and one broker certificate for 127.0.0.1 and localhost, in DIR/tls
  local tls="$DIR/tls"
  dev_tls "$tls" broker "docbus development Kafka CA" || die "making the TLS certificates in $tls failed"
  # Kafka's PEM keystore: the key and the certificate chain in one file.
  cat "$tls/broker.key" "$tls/broker.crt" "$tls/ca.pem" >"$tls/broker.pem" || die "writing $tls/broker.pem failed"
  chmod 600 "$tls/broker.pem"
}

write_secure_client_env() { # PASSWORD: the settings of a docbus that talks to the SASL_SSL listener
  local k servers=""
  for ((k = 1; k <= BROKERS; k++)); do
    servers+="${servers:+,}127.0.0.1:$(secure_port "$k")"
  done
  (
    umask 077
    printf '%s\n' "DOCBUS_KAFKA_BOOTSTRAP=$servers" "DOCBUS_KAFKA_SECURITY_PROTOCOL=SASL_SSL" \
      "DOCBUS_KAFKA_SASL_MECHANISM=SCRAM-SHA-512" "DOCBUS_KAFKA_SASL_USERNAME=$SCRAM_USER" \
      "DOCBUS_KAFKA_SASL_PASSWORD=$1" "DOCBUS_KAFKA_SSL_CA_FILE=$DIR/tls/ca.pem" >"$DIR/secure-client.env"
  )
}

launch_broker() { # K: start the JVM in the background, in its own session
  local k=$1 bdir pidf
  bdir=$(broker_dir "$k")
  pidf=$(pid_file "$k")
  rm -f "$pidf"
  # Remember where this run's log starts (see server_log_says_started).
  if [[ -f "$bdir/server.log" ]]; then wc -l <"$bdir/server.log"; else echo 0; fi >"$bdir/log.mark"
  # The inner shell writes its own pid and then execs java, so the pid file
  # names the JVM itself.
  # shellcheck disable=SC2016
  setsid bash -c 'echo $$ >"$1"; shift; exec "$@"' _ "$pidf" \
    java "${BROKER_HEAP[@]}" "${BROKER_JVM_OPTS[@]}" \
    "-Dlog4j2.configurationFile=$BROKER_LOG4J" "-Dkafka.logs.dir=$bdir" \
    -cp "$LIBS/*" kafka.Kafka "$bdir/server.properties" \
    </dev/null >>"$bdir/console.log" 2>&1 &
  disown "$!"
  local i
  for ((i = 0; i < 50; i++)); do
    [[ -s "$pidf" ]] && break
    sleep 0.1
  done
  [[ -s "$pidf" ]] || die "broker $k did not start (no pid file)"
  log "started broker $k (pid $(cat "$pidf"), 127.0.0.1:$(broker_port "$k"))"
}

show_logs() { # K...
  local k bdir f
  for k in "$@"; do
    bdir=$(broker_dir "$k")
    for f in "$bdir/console.log" "$bdir/server.log"; do
      [[ -s "$f" ]] || continue
      printf '\n----- last lines of %s -----\n' "$f" >&2
      tail -n 40 "$f" >&2
    done
  done
}

# Cheap readiness hint without a JVM: this run of broker K logged that it
# started.  If the log rolled over meanwhile, say yes and let the real check
# (live_broker_ids) decide.
server_log_says_started() { # K
  local bdir mark
  bdir=$(broker_dir "$1")
  [[ -f "$bdir/server.log" ]] || return 1
  mark=$(cat "$bdir/log.mark" 2>/dev/null || echo 0)
  (($(wc -l <"$bdir/server.log") >= mark)) || return 0
  tail -n "+$((mark + 1))" "$bdir/server.log" | grep -q 'Kafka Server started'
}

# Ask the cluster through BOOTSTRAP which brokers are registered and unfenced
# (only those are in the metadata) and answer requests; prints their ids.
live_broker_ids() { # BOOTSTRAP
  timeout 20 java "${TOOL_JVM_OPTS[@]}" -cp "$LIBS/*" org.apache.kafka.tools.BrokerApiVersionsCommand \
    --bootstrap-server "$1" 2>/dev/null |
    sed -n 's/^[^ ]* (id: \([0-9]*\) .*/\1/p' | sort -n -u || true
}

wait_for_brokers() { # BOOTSTRAP K... : wait until brokers K... are live
  local bootstrap=$1
  shift
  local deadline=$((SECONDS + START_TIMEOUT)) k live missing
  while :; do
    for k in "$@"; do
      broker_pid "$k" >/dev/null || {
        show_logs "$k"
        log "error: broker $k exited during startup (logs above, in $(broker_dir "$k"))"
        return 1
      }
    done
    # Cheap checks first (no JVM): the broker logged that it started and its
    # listener accepts connections.
    missing=""
    for k in "$@"; do
      server_log_says_started "$k" && port_in_use "$(broker_port "$k")" || missing+=" $k"
    done
    if [[ -z "$missing" ]]; then
      live=" $(live_broker_ids "$bootstrap" | tr '\n' ' ') "
      for k in "$@"; do
        [[ "$live" == *" $k "* ]] || missing+=" $k"
      done
      [[ -z "$missing" ]] && return 0
    fi
    if ((SECONDS >= deadline)); then
      show_logs "$@"
      log "error: broker(s)$missing not ready after ${START_TIMEOUT}s (logs above, in $DIR)"
      return 1
    fi
    sleep 1
  done
}

terminate() { # SIGNAL K... : signal brokers, wait up to STOP_TIMEOUT, then SIGKILL
  local sig=$1
  shift
  local k pid pids=() deadline
  for k in "$@"; do
    if pid=$(broker_pid "$k"); then
      kill "-$sig" "$pid" 2>/dev/null || true
      pids+=("$pid")
    fi
  done
  deadline=$((SECONDS + STOP_TIMEOUT))
  for pid in "${pids[@]}"; do
    while kill -0 "$pid" 2>/dev/null && ((SECONDS < deadline)); do
      sleep 0.2
    done
    if kill -0 "$pid" 2>/dev/null; then
      log "pid $pid still running after ${STOP_TIMEOUT}s: SIGKILL"
      kill -KILL "$pid" 2>/dev/null || true
    fi
  done
  for pid in "${pids[@]}"; do
    while kill -0 "$pid" 2>/dev/null; do sleep 0.1; done
  done
  for k in "$@"; do rm -f "$(pid_file "$k")"; done
}

# -------------------------------------------------------------- commands --

parse_common() { # sets DIR/BROKERS/PORT/KILL/POSITIONAL from the arguments
  DIR="$DEFAULT_DIR"
  OPT_BROKERS=""
  OPT_PORT=""
  KILL=0
  POSITIONAL=()
  while [[ $# -gt 0 ]]; do
    case "$1" in
      --dir) DIR=${2:?--dir needs a value}; shift 2 ;;
      --dir=*) DIR=${1#*=}; shift ;;
      --brokers) OPT_BROKERS=${2:?--brokers needs a value}; shift 2 ;;
      --brokers=*) OPT_BROKERS=${1#*=}; shift ;;
      --port) OPT_PORT=${2:?--port needs a value}; shift 2 ;;
      --port=*) OPT_PORT=${1#*=}; shift ;;
      --kill) KILL=1; shift ;;
      -h | --help) usage ;;
      -*) die "unknown option $1" ;;
      *) POSITIONAL+=("$1"); shift ;;
    esac
  done
  [[ -n "$DIR" && "$DIR" != "/" ]] || die "refusing to use '$DIR' as the cluster dir"
  DIR=$(realpath -m "$DIR")
}

is_our_dir() { [[ -f "$DIR/.docbus-kafka" ]]; }

cmd_start() {
  parse_common "$@"
  [[ ${#POSITIONAL[@]} -eq 0 ]] || die "start takes no positional arguments"
  [[ -z "$OPT_BROKERS" || "$OPT_BROKERS" =~ ^[1-9][0-9]*$ ]] || die "--brokers must be a positive number"
  [[ -z "$OPT_PORT" || "$OPT_PORT" =~ ^[1-9][0-9]*$ ]] || die "--port must be a number"

  if load_cluster; then
    if [[ -n "$OPT_BROKERS" && "$OPT_BROKERS" != "$BROKERS" ]] || [[ -n "$OPT_PORT" && "$OPT_PORT" != "$PORT" ]]; then
      die "$DIR already holds a cluster of $BROKERS broker(s) on port $PORT; run 'kafka.sh stop --dir $DIR' first"
    fi
    local k stopped=()
    for ((k = 1; k <= BROKERS; k++)); do
      broker_pid "$k" >/dev/null || stopped+=("$k")
    done
    if [[ ${#stopped[@]} -eq 0 ]]; then
      log "already running: $BROKERS broker(s) in $DIR"
      bootstrap_servers
      return 0
    fi
    ensure_fetched
    check_java
    log "restarting stopped broker(s) ${stopped[*]} in $DIR (data kept)"
    for k in "${stopped[@]}"; do launch_broker "$k"; done
    wait_for_brokers "$(bootstrap_servers)" $(seq 1 "$BROKERS") || exit 1
    bootstrap_servers
    return 0
  fi

  BROKERS=${OPT_BROKERS:-1}
  PORT=${OPT_PORT:-$DEFAULT_PORT}
  ((PORT + SECURE_PORT_OFFSET + BROKERS - 1 <= 65535)) || die "--port $PORT is too high"

  if [[ -e "$DIR" ]]; then
    if is_our_dir; then
      # Left over from a failed start: make sure nothing still runs from it.
      local ids=()
      mapfile -t ids < <(pidfile_ids)
      [[ ${#ids[@]} -eq 0 ]] || terminate KILL "${ids[@]}"
      rm -rf "$DIR"
    elif [[ -d "$DIR" && -z "$(ls -A "$DIR")" ]]; then
      :
    else
      die "$DIR exists and was not made by kafka.sh; choose another --dir or remove it"
    fi
  fi
  local k
  for ((k = 1; k <= BROKERS; k++)); do
    for p in "$(broker_port "$k")" "$(controller_port "$k")" "$(secure_port "$k")"; do
      ! port_in_use "$p" || die "port 127.0.0.1:$p is already in use"
    done
  done

  ensure_fetched
  check_java
  mkdir -p "$DIR"
  touch "$DIR/.docbus-kafka"

  local cluster_id scram_password
  cluster_id=$(run_tool kafka.tools.StorageTool random-uuid | tail -n 1)
  [[ -n "$cluster_id" ]] || die "StorageTool random-uuid printed nothing"
  make_tls
  scram_password=$(openssl rand -hex 16)
  write_secure_client_env "$scram_password"
  log "formatting $BROKERS broker(s) in $DIR, cluster id $cluster_id"
  local format_pids=()
  for ((k = 1; k <= BROKERS; k++)); do
    write_properties "$k"
    run_tool kafka.tools.StorageTool format -t "$cluster_id" -c "$(broker_dir "$k")/server.properties" \
      --add-scram "SCRAM-SHA-512=[name=$SCRAM_USER,password=$scram_password]" \
      >"$(broker_dir "$k")/format.log" 2>&1 &
    format_pids+=("$!")
  done
  for ((k = 1; k <= BROKERS; k++)); do
    if ! wait "${format_pids[k - 1]}"; then
      cat "$(broker_dir "$k")/format.log" >&2
      die "formatting broker $k failed (output above)"
    fi
  done

  for ((k = 1; k <= BROKERS; k++)); do launch_broker "$k"; done
  if ! wait_for_brokers "$(bootstrap_servers)" $(seq 1 "$BROKERS"); then
    terminate KILL $(seq 1 "$BROKERS")
    log "stopped the brokers; logs kept in $DIR"
    exit 1
  fi
  printf 'BROKERS=%s\nPORT=%s\nCLUSTER_ID=%s\nKAFKA_VERSION=%s\n' \
    "$BROKERS" "$PORT" "$cluster_id" "$KAFKA_VERSION" >"$DIR/cluster.env"
  log "Kafka $KAFKA_VERSION is up: $BROKERS broker(s), data in $DIR"
  bootstrap_servers
}

cmd_stop() {
  parse_common "$@"
  [[ ${#POSITIONAL[@]} -eq 0 ]] || die "stop takes no positional arguments"
  if [[ ! -e "$DIR" ]]; then
    log "nothing to stop: $DIR does not exist"
    return 0
  fi
  is_our_dir || die "$DIR was not made by kafka.sh; not touching it"
  local ids=()
  mapfile -t ids < <(pidfile_ids)
  if load_cluster; then
    mapfile -t ids < <(seq 1 "$BROKERS")
  fi
  if [[ ${#ids[@]} -gt 0 ]]; then
    terminate TERM "${ids[@]}"
  fi
  rm -rf "$DIR"
  log "stopped Kafka and removed $DIR"
}

cmd_stop_broker() {
  parse_common "$@"
  [[ ${#POSITIONAL[@]} -eq 1 ]] || die "usage: kafka.sh stop-broker K [--kill] [--dir DIR]"
  require_cluster
  local k=${POSITIONAL[0]}
  check_broker_id "$k"
  if ! broker_pid "$k" >/dev/null; then
    log "broker $k is not running"
    return 0
  fi
  if ((KILL)); then
    terminate KILL "$k"
    log "killed broker $k (data kept in $(broker_dir "$k"))"
  else
    terminate TERM "$k"
    log "stopped broker $k (data kept in $(broker_dir "$k"))"
  fi
}

cmd_start_broker() {
  parse_common "$@"
  [[ ${#POSITIONAL[@]} -eq 1 ]] || die "usage: kafka.sh start-broker K [--dir DIR]"
  require_cluster
  local k=${POSITIONAL[0]}
  check_broker_id "$k"
  if broker_pid "$k" >/dev/null; then
    log "broker $k is already running"
  else
    ensure_fetched
    check_java
    launch_broker "$k"
    wait_for_brokers "127.0.0.1:$(broker_port "$k")" "$k" || exit 1
    log "broker $k is back"
  fi
  bootstrap_servers
}

cmd_status() {
  parse_common "$@"
  if ! load_cluster; then
    log "no Kafka cluster in $DIR"
    return 3
  fi
  local k pid down=0
  for ((k = 1; k <= BROKERS; k++)); do
    if pid=$(broker_pid "$k"); then
      echo "broker $k: running (pid $pid) 127.0.0.1:$(broker_port "$k")"
    else
      echo "broker $k: stopped 127.0.0.1:$(broker_port "$k")"
      down=$((down + 1))
    fi
  done
  bootstrap_servers
  ((down == 0)) || return 1
}

cmd_perf_producer() {
  local bootstrap="" topic="" num="" size="" throughput=-1 props=()
  while [[ $# -gt 0 ]]; do
    case "$1" in
      --bootstrap | --bootstrap-server) bootstrap=${2:?}; shift 2 ;;
      --topic) topic=${2:?}; shift 2 ;;
      --num-records) num=${2:?}; shift 2 ;;
      --record-size) size=${2:?}; shift 2 ;;
      --throughput) throughput=${2:?}; shift 2 ;;
      --prop) props+=("${2:?}"); shift 2 ;;
      -h | --help) usage ;;
      *) die "unknown perf-producer argument $1" ;;
    esac
  done
  [[ -n "$bootstrap" && -n "$topic" && -n "$num" && -n "$size" ]] ||
    die "usage: kafka.sh perf-producer --bootstrap B --topic T --num-records N --record-size S [--throughput T] [--prop K=V]..."
  ensure_fetched
  check_java
  # Full JIT here (no TieredStopAtLevel): this is a benchmark.
  java -Xms256m -Xmx1g -XX:+UseG1GC -Djava.awt.headless=true "-Dlog4j2.configurationFile=$TOOLS_LOG4J" \
    -cp "$LIBS/*" org.apache.kafka.tools.ProducerPerformance \
    --bootstrap-server "$bootstrap" --topic "$topic" --num-records "$num" --record-size "$size" \
    --throughput "$throughput" \
    --command-property acks=all enable.idempotence=true batch.size=1048576 linger.ms=5 \
    compression.type=zstd "${props[@]}"
}

main() {
  [[ $# -ge 1 ]] || usage
  local cmd=$1
  shift
  case "$cmd" in
    fetch) cmd_fetch ;;
    start) cmd_start "$@" ;;
    stop) cmd_stop "$@" ;;
    stop-broker) cmd_stop_broker "$@" ;;
    start-broker) cmd_start_broker "$@" ;;
    status) cmd_status "$@" ;;
    perf-producer) cmd_perf_producer "$@" ;;
    run-class) cmd_run_class "$@" ;;
    version) echo "$KAFKA_VERSION" ;;
    -h | --help | help) usage ;;
    *) die "unknown command '$cmd' (try --help)" ;;
  esac
}

main "$@"
