#!/usr/bin/env bash
# A throwaway PostgreSQL cluster for the postgres backend's tests.
#
#   postgres.sh start DIR   initdb a cluster in a fresh temporary directory,
#                           start it on a free loopback port (TCP only, trust
#                           authentication on loopback), create the database
#                           botstate_test, and write to DIR/env:
#                             BOTSTATE_POSTGRES_URL      the URL the tests open
#                             BOTSTATE_POSTGRES_DATA     the cluster's data dir
#                             BOTSTATE_POSTGRES_PORT     its port
#                             BOTSTATE_POSTGRES_PG_CTL   the pg_ctl to run
#                             BOTSTATE_POSTGRES_RUN_AS   user to run it as
#                                                        (empty: the caller)
#                             BOTSTATE_POSTGRES_PGBENCH  pgbench, for the
#                                                        benchmark baseline
#                           The fault test uses the middle four to restart
#                           the server under load.
#   postgres.sh stop DIR    stop the server (immediate) and remove its files
#                           (the cluster's directory and DIR/env)
#
# It uses the machine's PostgreSQL binaries (initdb, pg_ctl, postgres from
# PATH or /usr/lib/postgresql/*/bin) and installs Debian's postgresql package
# when they are missing. PostgreSQL refuses to run as root, so as root the
# cluster belongs to the postgres user (created when missing), and its data
# directory lives outside DIR, which root's mktemp made unreadable to others.
# fsync is off: the cluster is thrown away after the run.
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
# shellcheck source=../lib.sh
. "$here/../lib.sh"

cmd=${1:-}
dir=${2:-}
service_args "$cmd" "$dir"

# pgbin NAME prints the path of a PostgreSQL server binary: the newest
# version under /usr/lib/postgresql first (Debian keeps the server binaries
# there), then PATH.
pgbin() {
  local name=$1 found
  found=$(ls -d /usr/lib/postgresql/*/bin/"$name" 2>/dev/null | sort -V | tail -n 1 || true)
  if [ -z "$found" ]; then
    found=$(command -v "$name" 2>/dev/null || true)
  fi
  [ -n "$found" ] || return 1
  echo "$found"
}

# as_owner CMD... runs CMD as the cluster's owner.
as_owner() {
  if [ -n "$owner" ]; then
    (cd / && runuser -u "$owner" -- "$@")
  else
    "$@"
  fi
}

start() {
  mkdir -p "$dir"
  if [ -z "$(pgbin initdb)" ] || [ -z "$(pgbin pg_ctl)" ] || [ -z "$(pgbin postgres)" ]; then
    apt_install postgresql
  fi
  local initdb pg_ctl createdb pgbench
  initdb=$(pgbin initdb || true)
  pg_ctl=$(pgbin pg_ctl || true)
  createdb=$(pgbin createdb || true)
  pgbench=$(pgbin pgbench || true)
  if [ -z "$initdb" ] || [ -z "$pg_ctl" ]; then
    echo "postgres.sh: no initdb/pg_ctl found even after installing postgresql" >&2
    return 1
  fi

  owner=""
  if [ "$(id -u)" -eq 0 ]; then
    owner=postgres
    if ! id "$owner" >/dev/null 2>&1; then
      useradd --system --home-dir /var/lib/postgresql --shell /bin/sh "$owner"
    fi
  fi

  local base data port
  base=$(mktemp -d "${TMPDIR:-/tmp}/botstate-pg.XXXXXX")
  echo "$base" >"$dir/base"
  data="$base/data"
  [ -n "$owner" ] && chown "$owner" "$base"
  chmod 700 "$base"

  as_owner "$initdb" -D "$data" -U postgres -A trust -E UTF8 --locale=C --no-sync >"$base/initdb.log" 2>&1 || {
    cat "$base/initdb.log" >&2
    return 1
  }
  port=$(free_port)
  # The settings go in postgresql.conf, so that a plain "pg_ctl start" (the
  # fault test's restart) brings the server back as it was: TCP on loopback
  # only (no Unix socket, nothing to clean up in /run), room for the many
  # pools a test run opens, and no fsync for speed.
  cat >>"$data/postgresql.conf" <<EOF
listen_addresses = '127.0.0.1'
port = $port
unix_socket_directories = ''
max_connections = 300
fsync = off
full_page_writes = off
EOF
  if ! as_owner "$pg_ctl" -D "$data" -l "$base/server.log" -w -t 60 start >/dev/null; then
    cat "$base/server.log" >&2
    stop
    return 1
  fi
  wait_port "$port" 30
  if [ -n "$createdb" ]; then
    as_owner "$createdb" -h 127.0.0.1 -p "$port" -U postgres botstate_test
  else
    as_owner "$(pgbin psql)" -h 127.0.0.1 -p "$port" -U postgres -d postgres -qc "CREATE DATABASE botstate_test"
  fi
  cat >"$dir/env" <<EOF
export BOTSTATE_POSTGRES_URL='postgres://postgres@127.0.0.1:$port/botstate_test?sslmode=disable'
export BOTSTATE_POSTGRES_DATA='$data'
export BOTSTATE_POSTGRES_PORT='$port'
export BOTSTATE_POSTGRES_PG_CTL='$pg_ctl'
export BOTSTATE_POSTGRES_RUN_AS='$owner'
export BOTSTATE_POSTGRES_PGBENCH='$pgbench'
EOF
  echo "PostgreSQL $("$pg_ctl" --version | awk '{print $3}') on 127.0.0.1:$port, data in $data"
}

stop() {
  local base
  base=$(cat "$dir/base" 2>/dev/null || true)
  if [ -n "$base" ] && [ -d "$base/data" ]; then
    owner=""
    [ "$(id -u)" -eq 0 ] && owner=postgres
    as_owner "$(pgbin pg_ctl)" -D "$base/data" -m immediate -w -t 30 stop >/dev/null 2>&1 || true
  fi
  [ -n "$base" ] && rm -rf "$base"
  # Only our own files: DIR itself may hold the caller's start.log, which
  # must survive a failed start to be shown.
  rm -f "$dir/env" "$dir/base"
}

case "$cmd" in
start) start ;;
stop) stop ;;
*)
  echo "usage: $0 start|stop DIR" >&2
  exit 2
  ;;
esac
