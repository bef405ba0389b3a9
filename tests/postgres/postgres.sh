#!/usr/bin/env bash
# A private PostgreSQL on loopback for postcanary's tests (Debian's package).
#
#   postgres.sh install          install postgresql if missing (apt-get); no system cluster is started
#   postgres.sh start DIR PORT   initdb a cluster in DIR/data and start it on 127.0.0.1:PORT
#   postgres.sh stop DIR         stop it (idempotent)
#
# The cluster has a superuser `postcanary` whose password is in DIR/password,
# a database `postcanary`, password (SCRAM) authentication over TCP, and TLS
# with a throwaway CA: DIR/ca.pem signs the server certificate for
# 127.0.0.1/localhost. Postgres refuses to run as root; as root the cluster
# belongs to the `postgres` user (created by the package), otherwise to the
# caller. Nothing under /etc is changed.
set -euo pipefail

WAIT_SECONDS=30
POLICY=/usr/sbin/policy-rc.d
CREATED_POLICY=

die() { echo "postgres.sh: $*" >&2; exit 1; }

bindir() {
  local d
  d=$(ls -d /usr/lib/postgresql/*/bin 2>/dev/null | sort -V | tail -n 1 || true)
  [ -n "$d" ] && [ -x "$d/initdb" ] && [ -x "$d/pg_ctl" ] || return 1
  echo "$d"
}

cleanup_install() {
  if [ -n "$CREATED_POLICY" ]; then rm -f "$POLICY"; fi
}

do_install() {
  if bindir >/dev/null && command -v openssl >/dev/null; then return 0; fi
  [ "$(id -u)" = 0 ] || die "postgresql is not installed and installing needs root (apt-get install postgresql openssl)"
  trap cleanup_install EXIT
  if [ ! -e "$POLICY" ]; then
    # The package would start its own cluster; the tests start theirs.
    printf '#!/bin/sh\nexit 101\n' > "$POLICY"
    chmod 755 "$POLICY"
    CREATED_POLICY=1
  fi
  local log
  log=$(mktemp)
  export DEBIAN_FRONTEND=noninteractive
  if ! apt-get install -y -q --no-install-recommends postgresql openssl >"$log" 2>&1; then
    apt-get update -q >>"$log" 2>&1 || true
    apt-get install -y -q --no-install-recommends postgresql openssl >>"$log" 2>&1 \
      || { cat "$log" >&2; rm -f "$log"; die "apt-get install postgresql failed"; }
  fi
  rm -f "$log"
  bindir >/dev/null || die "postgresql still missing after apt-get install"
}

# Runs a command as the cluster's owner.
as_owner() {
  if [ "$(id -u)" = 0 ]; then
    runuser -u postgres -- "$@"
  else
    "$@"
  fi
}

do_start() {
  local dir=$1 port=$2 bin
  bin=$(bindir) || die "postgresql is not installed (run: postgres.sh install)"
  mkdir -p "$dir"
  dir=$(cd "$dir" && pwd)
  openssl rand -hex 16 > "$dir/password"
  # A throwaway CA and a server certificate for 127.0.0.1 and localhost.
  openssl req -x509 -newkey rsa:2048 -nodes -days 2 -subj "/CN=postcanary test CA" \
    -keyout "$dir/ca.key" -out "$dir/ca.pem" \
    -addext "basicConstraints=critical,CA:TRUE" -addext "keyUsage=critical,keyCertSign" >/dev/null 2>&1
  openssl req -newkey rsa:2048 -nodes -subj "/CN=localhost" \
    -keyout "$dir/server.key" -out "$dir/server.csr" >/dev/null 2>&1
  printf 'subjectAltName=IP:127.0.0.1,DNS:localhost\nbasicConstraints=CA:FALSE\nextendedKeyUsage=serverAuth\n' > "$dir/ext.cnf"
  openssl x509 -req -in "$dir/server.csr" -CA "$dir/ca.pem" -CAkey "$dir/ca.key" -CAcreateserial \
    -days 2 -extfile "$dir/ext.cnf" -out "$dir/server.pem" >/dev/null 2>&1
  chmod 600 "$dir/server.key"
  if [ "$(id -u)" = 0 ]; then chown -R postgres: "$dir"; fi
  as_owner "$bin/initdb" -D "$dir/data" -U postcanary --pwfile="$dir/password" \
    --auth-local=scram-sha-256 --auth-host=scram-sha-256 -E UTF8 --no-sync >"$dir/initdb.log" 2>&1 \
    || { cat "$dir/initdb.log" >&2; die "initdb failed"; }
  mkdir -p "$dir/sock"
  if [ "$(id -u)" = 0 ]; then chown postgres: "$dir/sock"; fi
  cat >> "$dir/data/postgresql.conf" <<CONF
listen_addresses = '127.0.0.1'
port = $port
unix_socket_directories = '$dir/sock'
ssl = on
ssl_cert_file = '$dir/server.pem'
ssl_key_file = '$dir/server.key'
fsync = off
synchronous_commit = off
full_page_writes = off
max_connections = 200
shared_buffers = 64MB
log_min_messages = warning
CONF
  as_owner "$bin/pg_ctl" -D "$dir/data" -l "$dir/postgres.log" -w -t "$WAIT_SECONDS" start >"$dir/start.log" 2>&1 \
    || { cat "$dir/start.log" "$dir/postgres.log" >&2 2>/dev/null; die "pg_ctl start failed"; }
  as_owner env PGPASSWORD="$(cat "$dir/password")" \
    "$bin/psql" -h 127.0.0.1 -p "$port" -U postcanary -d postgres -q -v ON_ERROR_STOP=1 \
    -c "CREATE DATABASE postcanary" >/dev/null || die "CREATE DATABASE failed"
}

do_stop() {
  local dir=$1 bin
  [ -d "$dir/data" ] || return 0
  bin=$(bindir) || return 0
  if [ -f "$dir/data/postmaster.pid" ]; then
    as_owner "$bin/pg_ctl" -D "$dir/data" -m immediate -w -t "$WAIT_SECONDS" stop >/dev/null 2>&1 || true
  fi
}

case "${1:-}" in
  install) do_install ;;
  start) [ $# -eq 3 ] || die "usage: postgres.sh start DIR PORT"; do_start "$2" "$3" ;;
  stop) [ $# -eq 2 ] || die "usage: postgres.sh stop DIR"; do_stop "$2" ;;
  *) die "usage: postgres.sh install | start DIR PORT | stop DIR" ;;
esac
