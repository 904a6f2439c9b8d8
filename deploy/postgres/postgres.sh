#!/usr/bin/env bash
# Run a throwaway PostgreSQL server on 127.0.0.1 for development, tests and
# CI, from the Debian packages.  See deploy/README.md.
#
#   postgres.sh start [--dir DIR] [--port P]
#   postgres.sh stop [--dir DIR] [--immediate] [--keep]
#   postgres.sh status [--dir DIR]
#
# start prints the SQLAlchemy URL as the last line of stdout, e.g.
#   postgresql+asyncpg://docbus:docbus@127.0.0.1:25432/docbus_test
# stop shuts the server down (fast mode; --immediate for a crash-like stop)
# and removes DIR unless --keep is given; a later start reuses kept data.
# The server also speaks TLS, with a certificate for 127.0.0.1 and localhost
# from a CA made for it: DIR/tls/ca.pem (DOCBUS_DATABASE_SSL_CA_FILE). The role
# docbus_cert (a member of docbus) logs in over TLS with the client certificate
# DIR/tls/client.crt and client.key (DOCBUS_DATABASE_SSL_CERT_FILE, …_KEY_FILE).
# Progress and errors go to stderr.
set -euo pipefail
# shellcheck source=../dev-tls.sh
. "$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)/../dev-tls.sh"

DEFAULT_DIR="${DOCBUS_PG_DIR:-/tmp/docbus-pg}"
# Below the kernel's ephemeral port range (32768-60999), so that no outgoing connection (pg_isready polling
# while the server starts, say) can be handed this port and keep the server from binding it.
DEFAULT_PORT="${DOCBUS_PG_PORT:-25432}"
DB_USER=docbus
DB_PASSWORD=docbus
DB_NAME=docbus_test
CERT_USER=docbus_cert # authenticated by its client certificate only
START_TIMEOUT=60

log() { printf 'postgres.sh: %s\n' "$*" >&2; }
die() {
  log "error: $*"
  exit 1
}

usage() {
  sed -n '2,/^set -euo/p' "${BASH_SOURCE[0]}" | sed -e '/^set -euo/d' -e 's/^# \{0,1\}//' >&2
  exit 2
}

DIR=""
PORT=""
OPT_PORT=""
IMMEDIATE=0
KEEP=0

parse_args() {
  DIR="$DEFAULT_DIR"
  while [[ $# -gt 0 ]]; do
    case "$1" in
      --dir) DIR=${2:?--dir needs a value}; shift 2 ;;
      --dir=*) DIR=${1#*=}; shift ;;
      --port) OPT_PORT=${2:?--port needs a value}; shift 2 ;;
      --port=*) OPT_PORT=${1#*=}; shift ;;
      --immediate) IMMEDIATE=1; shift ;;
      --keep) KEEP=1; shift ;;
      -h | --help) usage ;;
      *) die "unknown argument $1" ;;
    esac
  done
  [[ -n "$DIR" && "$DIR" != "/" ]] || die "refusing to use '$DIR' as the server dir"
  DIR=$(realpath -m "$DIR")
  [[ -z "$OPT_PORT" || "$OPT_PORT" =~ ^[1-9][0-9]*$ ]] || die "--port must be a number"
}

DATA() { printf '%s/data' "$DIR"; }
SOCK() { printf '%s/socket' "$DIR"; }

url() { printf 'postgresql+asyncpg://%s:%s@127.0.0.1:%s/%s\n' "$DB_USER" "$DB_PASSWORD" "$PORT" "$DB_NAME"; }

is_our_dir() { [[ -f "$DIR/.docbus-pg" ]]; }

# initdb and pg_ctl refuse to run as root: as root, run the server tools as
# the postgres OS user (created by Debian's postgresql package).
as_owner() {
  if [[ $EUID -eq 0 ]]; then
    runuser -u postgres -- "$@"
  else
    "$@"
  fi
}

PG_BIN=""
find_pg_bin() { # sets PG_BIN to the newest installed major version's bin dir
  local initdb
  initdb=$(find /usr/lib/postgresql -mindepth 3 -maxdepth 3 -path '*/bin/initdb' 2>/dev/null | sort -V | tail -n 1)
  [[ -n "$initdb" ]] || return 1
  PG_BIN=${initdb%/initdb}
}

ensure_installed() {
  find_pg_bin && return 0
  [[ $EUID -eq 0 ]] || die "PostgreSQL server binaries not found; run: sudo apt-get install -y postgresql"
  log "PostgreSQL not installed: apt-get install -y postgresql"
  if ! { apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq postgresql; } >&2; then
    die "apt-get could not install postgresql"
  fi
  find_pg_bin || die "postgresql installed but no /usr/lib/postgresql/*/bin/initdb found"
}

server_running() { # 0 if a server runs from DIR/data
  [[ -f "$(DATA)/postmaster.pid" ]] || return 1
  as_owner "$PG_BIN/pg_ctl" -D "$(DATA)" status >/dev/null 2>&1
}

port_in_use() {
  (: <>"/dev/tcp/127.0.0.1/$1") 2>/dev/null
}

psql_admin() { # SQL... run as the superuser over the unix socket
  as_owner "$PG_BIN/psql" -X -q -v ON_ERROR_STOP=1 -h "$(SOCK)" -p "$PORT" -U postgres -d postgres "$@"
}

ensure_role_and_db() {
  psql_admin -c "DO \$\$BEGIN
    IF NOT EXISTS (SELECT FROM pg_roles WHERE rolname = '$DB_USER') THEN
      CREATE ROLE $DB_USER LOGIN CREATEDB PASSWORD '$DB_PASSWORD';
    END IF;
    IF NOT EXISTS (SELECT FROM pg_roles WHERE rolname = '$CERT_USER') THEN
      CREATE ROLE $CERT_USER LOGIN IN ROLE $DB_USER;
    END IF;
  END\$\$;" >&2
  if [[ "$(psql_admin -At -c "SELECT 1 FROM pg_database WHERE datname = '$DB_NAME'")" != 1 ]]; then
    psql_admin -c "CREATE DATABASE $DB_NAME OWNER $DB_USER" >&2
  fi
}

wait_ready() {
  local deadline=$((SECONDS + START_TIMEOUT))
  until "$PG_BIN/pg_isready" -q -h 127.0.0.1 -p "$PORT" -d postgres; do
    if ((SECONDS >= deadline)); then
      tail -n 40 "$DIR/postgres.log" >&2 || true
      die "PostgreSQL on 127.0.0.1:$PORT not ready after ${START_TIMEOUT}s (log above, in $DIR/postgres.log)"
    fi
    sleep 0.5
  done
}

start_server() {
  if ! as_owner "$PG_BIN/pg_ctl" -D "$(DATA)" -l "$DIR/postgres.log" -w -t "$START_TIMEOUT" start >/dev/null; then
    tail -n 40 "$DIR/postgres.log" >&2 || true
    die "pg_ctl start failed (log above, in $DIR/postgres.log)"
  fi
}

cmd_start() {
  parse_args "$@"
  ensure_installed

  if is_our_dir && [[ -f "$DIR/port" ]]; then
    PORT=$(cat "$DIR/port")
    if [[ -n "$OPT_PORT" && "$OPT_PORT" != "$PORT" ]]; then
      die "$DIR already holds a server for port $PORT; run 'postgres.sh stop --dir $DIR' first"
    fi
    if server_running; then
      log "already running: PostgreSQL in $DIR on 127.0.0.1:$PORT"
    else
      ! port_in_use "$PORT" || die "port 127.0.0.1:$PORT is already in use"
      log "starting PostgreSQL again from the data kept in $DIR"
      start_server
    fi
    wait_ready
    ensure_role_and_db
    url
    return 0
  fi

  PORT=${OPT_PORT:-$DEFAULT_PORT}
  if [[ -e "$DIR" ]]; then
    if is_our_dir; then
      rm -rf "$DIR" # left over from a failed start
    elif [[ -d "$DIR" && -z "$(ls -A "$DIR")" ]]; then
      :
    else
      die "$DIR exists and was not made by postgres.sh; choose another --dir or remove it"
    fi
  fi
  ! port_in_use "$PORT" || die "port 127.0.0.1:$PORT is already in use"

  mkdir -p "$DIR"
  touch "$DIR/.docbus-pg"
  echo "$PORT" >"$DIR/port"
  mkdir -p "$(SOCK)"
  make_tls
  if [[ $EUID -eq 0 ]]; then
    chown -R postgres:postgres "$DIR"
    runuser -u postgres -- test -w "$DIR" ||
      die "the postgres OS user cannot write to $DIR (a parent directory is closed to it?); use --dir under /tmp"
  fi

  log "initdb ($("$PG_BIN/postgres" --version)) in $(DATA)"
  if ! as_owner "$PG_BIN/initdb" -D "$(DATA)" -U postgres -E UTF8 --locale=C.UTF-8 \
    --auth-local=trust --auth-host=scram-sha-256 >"$DIR/initdb.log" 2>&1; then
    cat "$DIR/initdb.log" >&2
    die "initdb failed (output above)"
  fi
  cat >>"$(DATA)/postgresql.conf" <<EOF

# Written by deploy/postgres/postgres.sh
listen_addresses = '127.0.0.1'
port = $PORT
unix_socket_directories = '$(SOCK)'
max_connections = 200
# Durability tests depend on these being on: never turn them off here.
fsync = on
synchronous_commit = on
full_page_writes = on
shared_buffers = 128MB
logging_collector = off
log_min_messages = warning
log_connections = off
log_disconnections = off
# TLS for clients that ask for it (docbus with DOCBUS_DATABASE_SSL_CA_FILE); client certificates of this CA
# authenticate the role $CERT_USER (pg_hba.conf).
ssl = on
ssl_cert_file = '$DIR/tls/server.crt'
ssl_key_file = '$DIR/tls/server.key'
ssl_ca_file = '$DIR/tls/ca.pem'
EOF
  # First match wins: the certificate role over TLS only, before initdb's password lines.
  { printf '%s\n' "hostssl all $CERT_USER 127.0.0.1/32 cert" && cat "$(DATA)/pg_hba.conf"; } >"$DIR/pg_hba.conf.new" &&
    mv "$DIR/pg_hba.conf.new" "$(DATA)/pg_hba.conf" || die "writing pg_hba.conf failed"
  [[ $EUID -ne 0 ]] || chown postgres:postgres "$(DATA)/pg_hba.conf"
  start_server
  wait_ready
  ensure_role_and_db
  log "PostgreSQL is up on 127.0.0.1:$PORT, data in $DIR"
  url
}

make_tls() { # a CA, a server certificate for 127.0.0.1 and localhost, and the client certificate of CERT_USER
  dev_tls "$DIR/tls" server "docbus development PostgreSQL CA" || die "making the TLS certificate in $DIR/tls failed"
  dev_tls_client "$DIR/tls" client "$CERT_USER" || die "making the client certificate in $DIR/tls failed"
}

cmd_stop() {
  parse_args "$@"
  if [[ ! -e "$DIR" ]]; then
    log "nothing to stop: $DIR does not exist"
    return 0
  fi
  is_our_dir || die "$DIR was not made by postgres.sh; not touching it"
  if [[ -f "$(DATA)/postmaster.pid" ]]; then
    find_pg_bin || die "PostgreSQL binaries not found"
    local mode=fast pid
    ((IMMEDIATE)) && mode=immediate
    pid=$(head -n 1 "$(DATA)/postmaster.pid")
    if ! as_owner "$PG_BIN/pg_ctl" -D "$(DATA)" -m "$mode" -w -t 30 stop >/dev/null 2>&1; then
      if [[ "$pid" =~ ^[0-9]+$ ]] && kill -0 "$pid" 2>/dev/null; then
        log "pg_ctl stop did not finish: SIGKILL to postmaster $pid"
        kill -KILL "$pid" 2>/dev/null || true
        while kill -0 "$pid" 2>/dev/null; do sleep 0.1; done
      fi
    fi
  fi
  if ((KEEP)); then
    log "stopped PostgreSQL; data kept in $DIR"
  else
    rm -rf "$DIR"
    log "stopped PostgreSQL and removed $DIR"
  fi
}

cmd_status() {
  parse_args "$@"
  if ! is_our_dir || [[ ! -f "$DIR/port" ]]; then
    log "no PostgreSQL server in $DIR"
    return 3
  fi
  PORT=$(cat "$DIR/port")
  find_pg_bin || die "PostgreSQL binaries not found"
  if server_running; then
    echo "running: 127.0.0.1:$PORT, data in $DIR"
    url
  else
    echo "stopped: 127.0.0.1:$PORT, data in $DIR"
    return 1
  fi
}

main() {
  [[ $# -ge 1 ]] || usage
  local cmd=$1
  shift
  case "$cmd" in
    start) cmd_start "$@" ;;
    stop) cmd_stop "$@" ;;
    status) cmd_status "$@" ;;
    -h | --help | help) usage ;;
    *) die "unknown command '$cmd' (try --help)" ;;
  esac
}

main "$@"
