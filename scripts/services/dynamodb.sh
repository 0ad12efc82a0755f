#!/usr/bin/env bash
# DynamoDB Local for the dynamodb backend's tests.
#
#   dynamodb.sh start DIR   fetch DynamoDB Local if it is not cached, run it
#                           in memory on a free loopback port, and write
#                           "export BOTSTATE_DYNAMODB_URL=..." to DIR/env
#   dynamodb.sh stop DIR    stop it and remove DIR's files
#
# AWS ships DynamoDB Local inside the npm package amplify-dynamodb-simulator
# (under package/emulator/), so it comes from the npm registry like any
# package; the extracted emulator is cached under
# ${XDG_CACHE_HOME:-~/.cache}/botstate/dynamodb-local-VERSION so later runs skip the
# download. It runs on the machine's Java; a headless JRE is installed from
# Debian's packages when java is missing.
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
# shellcheck source=../lib.sh
. "$here/../lib.sh"

cmd=${1:-}
dir=${2:-}
service_args "$cmd" "$dir"

# The npm package's version is pinned: a new release cannot change what the
# tests run against until this line does.
simulator=amplify-dynamodb-simulator@2.9.30
cache="${XDG_CACHE_HOME:-${HOME:-/root}/.cache}/botstate/dynamodb-local-2.9.30"

# fetch makes sure $cache holds DynamoDBLocal.jar and its libraries. It
# unpacks into a temporary directory and renames it into place, so two runs
# fetching at once never see a half-extracted emulator.
fetch() {
  [ -f "$cache/DynamoDBLocal.jar" ] && return 0
  command -v npm >/dev/null 2>&1 || apt_install npm
  mkdir -p "$(dirname "$cache")"
  local tmp
  tmp=$(mktemp -d "$(dirname "$cache")/fetch.XXXXXX")
  (
    cd "$tmp"
    npm pack --silent "$simulator" >/dev/null
    tar xzf amplify-dynamodb-simulator-*.tgz package/emulator
  )
  if [ ! -f "$tmp/package/emulator/DynamoDBLocal.jar" ]; then
    echo "dynamodb.sh: the npm package holds no package/emulator/DynamoDBLocal.jar" >&2
    rm -rf "$tmp"
    return 1
  fi
  if ! mv -T "$tmp/package/emulator" "$cache" 2>/dev/null; then
    # Another run put it in place first.
    [ -f "$cache/DynamoDBLocal.jar" ] || { rm -rf "$tmp"; return 1; }
  fi
  rm -rf "$tmp"
}

# probe reports whether DynamoDB answers on port $1 (and not some other
# server that took the port first): an unsigned ListTables gets an AWS
# error naming the missing authentication, with AWS headers.
probe() {
  local reply
  reply=$( (exec 3<>"/dev/tcp/127.0.0.1/$1" &&
    printf 'POST / HTTP/1.1\r\nHost: 127.0.0.1\r\nX-Amz-Target: DynamoDB_20120810.ListTables\r\nContent-Type: application/x-amz-json-1.0\r\nContent-Length: 2\r\nConnection: close\r\n\r\n{}' >&3 &&
    timeout 2 cat <&3) 2>/dev/null)
  case "$reply" in
    *[Xx]-[Aa]mz*) return 0 ;;
  esac
  return 1
}

# launch runs DynamoDB Local on port $1 in the background and waits, up to
# 30 seconds, until it answers. It fails early when the server fails to
# start, say because another service starting at the same moment took the
# port (free_port can only tell the port was free when it looked).
launch() {
  local port=$1 pid deadline=$((SECONDS + 30))
  # -sharedDb: one database whatever the credentials and region a client
  # signs with. -disableTelemetry (and the variable, for older releases):
  # the emulator must not try to reach AWS; tests talk to loopback only.
  # The heap cap keeps it a good neighbour on a small machine.
  (
    cd "$cache"
    export DDB_LOCAL_TELEMETRY=0
    exec java -Xmx512m -Djava.library.path=./DynamoDBLocal_lib -jar DynamoDBLocal.jar \
      -inMemory -sharedDb -disableTelemetry -port "$port"
  ) >"$dir/dynamodb.log" 2>&1 &
  pid=$!
  echo "$pid" >"$dir/pid"
  while [ "$SECONDS" -lt "$deadline" ]; do
    kill -0 "$pid" 2>/dev/null || return 1
    # A failed bind ends the main thread but not the JVM.
    grep -q 'Exception in thread "main"' "$dir/dynamodb.log" && return 1
    probe "$port" && return 0
    sleep 0.2
  done
  return 1
}

start() {
  mkdir -p "$dir"
  command -v java >/dev/null 2>&1 || apt_install default-jre-headless
  fetch
  local port try
  for try in 1 2 3 4 5; do
    port=$(free_port)
    if launch "$port"; then
      echo "export BOTSTATE_DYNAMODB_URL='dynamodb://botstate-test?endpoint=http://127.0.0.1:$port&region=us-east-1&create=1'" >"$dir/env"
      echo "DynamoDB Local on 127.0.0.1:$port (pid $(cat "$dir/pid"))"
      return 0
    fi
    echo "dynamodb.sh: attempt $try on port $port failed:" >&2
    tail -n 20 "$dir/dynamodb.log" >&2
    stop_server
  done
  return 1
}

# stop_server stops the emulator this DIR started, if any.
stop_server() {
  if [ -f "$dir/pid" ]; then
    local pid
    pid=$(cat "$dir/pid")
    if kill "$pid" 2>/dev/null; then
      for _ in $(seq 1 50); do
        kill -0 "$pid" 2>/dev/null || break
        sleep 0.1
      done
      kill -9 "$pid" 2>/dev/null || true
    fi
    rm -f "$dir/pid"
  fi
}

stop() {
  stop_server
  rm -f "$dir/env" "$dir/dynamodb.log"
}

case "$cmd" in
  start) start ;;
  stop) stop ;;
  *) echo "usage: $0 start|stop DIR" >&2; exit 2 ;;
esac
