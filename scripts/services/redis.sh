#!/usr/bin/env bash
# Redis servers for the redis backend's tests.
#
#   redis.sh start DIR   install redis-server and redis-tools from Debian's
#                        packages when missing, then start on free loopback
#                        ports: one standalone server, a 3-master Cluster,
#                        a second standalone server that the fault test may
#                        kill and restart, and a TLS-only server with an ACL
#                        user (self-signed certificate made with openssl);
#                        write their URLs to DIR/env
#   redis.sh stop DIR    stop every server started in DIR and remove the
#                        files this script made there (DIR itself, and files
#                        others write into it such as the test script's
#                        start.log, are left alone, so the cause of a failed
#                        start stays readable)
#
# Nothing is persisted (save "", appendonly no): the servers live for one
# test run. Each server's config, pid file and log live under DIR, so stop
# finds every process by its pid file, including a fault server the test
# restarted.
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
# shellcheck source=../lib.sh
. "$here/../lib.sh"

cmd=${1:-}
dir=${2:-}
service_args "$cmd" "$dir"

# install installs the server and redis-benchmark when missing
# (apt_install queues behind the other service scripts' installs).
install() {
  command -v redis-server >/dev/null 2>&1 && command -v redis-cli >/dev/null 2>&1 &&
    command -v redis-benchmark >/dev/null 2>&1 && return 0
  apt_install redis-server redis-tools
}

# conf NAME PORT [EXTRA...] writes DIR/NAME.conf for a server on PORT.
conf() {
  local name=$1 port=$2
  shift 2
  mkdir -p "$dir/$name"
  {
    echo "port $port"
    echo "bind 127.0.0.1"
    echo "protected-mode no"
    echo "daemonize yes"
    echo "pidfile $dir/$name/redis.pid"
    echo "logfile $dir/$name/redis.log"
    echo "dir $dir/$name"
    echo "save \"\""
    echo "appendonly no"
    for line in "$@"; do echo "$line"; done
  } >"$dir/$name.conf"
}

# serve NAME starts the server of DIR/NAME.conf and waits until it is
# ready. It fails when the server died instead (its port was taken between
# free_port and the bind, say), so a port answered by another program is
# never mistaken for ours.
serve() {
  local name=$1 i pid
  redis-server "$dir/$name.conf" || return 1
  for i in $(seq 1 300); do
    if grep -q "Ready to accept connections" "$dir/$name/redis.log" 2>/dev/null; then
      pid=$(cat "$dir/$name/redis.pid" 2>/dev/null || true)
      [ -n "$pid" ] && running "$pid" && return 0
    fi
    if grep -qiE "could not create server|Failed listening|Address already in use" "$dir/$name/redis.log" 2>/dev/null; then
      break
    fi
    sleep 0.1
  done
  echo "redis.sh: server $name did not start; its log:" >&2
  tail -5 "$dir/$name/redis.log" >&2 2>/dev/null || true
  return 1
}

# start_once starts everything on fresh ports; on failure it stops what it
# started and returns 1, leaving DIR for another attempt.
start_once() {
  local p1 pf pt c1 c2 c3
  p1=$(free_port)
  pf=$(free_port)
  pt=$(free_port)
  c1=$(free_port)
  c2=$(free_port)
  c3=$(free_port)
  conf standalone "$p1"
  conf fault "$pf"
  mkdir -p "$dir/tls"
  openssl req -x509 -newkey rsa:2048 -nodes -days 2 -subj /CN=127.0.0.1 \
    -addext "subjectAltName=IP:127.0.0.1" \
    -keyout "$dir/tls/key.pem" -out "$dir/tls/cert.pem" >/dev/null 2>&1
  conf tls 0 "tls-port $pt" "tls-cert-file $dir/tls/cert.pem" "tls-key-file $dir/tls/key.pem" \
    "tls-ca-cert-file $dir/tls/cert.pem" "tls-auth-clients no" \
    "user default off" "user botstate on >s3cret ~* &* +@all"
  # The bus port is chosen too: its default, the port plus 10000, may fall
  # in the kernel's ephemeral range.
  for p in "$c1" "$c2" "$c3"; do
    conf "cluster-$p" "$p" "cluster-enabled yes" "cluster-config-file $dir/cluster-$p/nodes.conf" \
      "cluster-node-timeout 5000" "cluster-port $(free_port)"
  done
  serve standalone || { stop_servers; return 1; }
  serve fault || { stop_servers; return 1; }
  serve tls || { stop_servers; return 1; }
  for p in "$c1" "$c2" "$c3"; do
    serve "cluster-$p" || { stop_servers; return 1; }
  done
  if ! redis-cli --cluster create "127.0.0.1:$c1" "127.0.0.1:$c2" "127.0.0.1:$c3" \
    --cluster-replicas 0 --cluster-yes >"$dir/cluster-create.log" 2>&1; then
    cat "$dir/cluster-create.log" >&2
    stop_servers
    return 1
  fi
  local i okc
  for i in $(seq 1 300); do
    okc=0
    for p in "$c1" "$c2" "$c3"; do
      redis-cli -p "$p" cluster info 2>/dev/null | grep -q '^cluster_state:ok' && okc=$((okc + 1))
    done
    [ "$okc" = 3 ] && break
    sleep 0.1
  done
  if [ "$okc" != 3 ]; then
    echo "redis.sh: the cluster did not reach cluster_state:ok" >&2
    stop_servers
    return 1
  fi
  {
    echo "export BOTSTATE_REDIS_URL='redis://127.0.0.1:$p1/0'"
    echo "export BOTSTATE_REDIS_CLUSTER_URL='redis+cluster://127.0.0.1:$c1,127.0.0.1:$c2,127.0.0.1:$c3'"
    echo "export BOTSTATE_REDIS_FAULT_URL='redis://127.0.0.1:$pf/0'"
    echo "export BOTSTATE_REDIS_FAULT_CONF='$dir/fault.conf'"
    echo "export BOTSTATE_REDIS_TLS_URL='rediss://botstate:s3cret@127.0.0.1:$pt/2?skip_verify=true&prefix=tls:'"
  } >"$dir/env"
  echo "redis standalone on 127.0.0.1:$p1, fault server on $pf, TLS server on $pt, cluster on $c1,$c2,$c3"
}

start() {
  mkdir -p "$dir"
  install
  command -v openssl >/dev/null 2>&1 || apt_install openssl
  local attempt
  for attempt in 1 2 3; do
    start_once && return 0
    echo "redis.sh: start attempt $attempt failed; retrying on other ports" >&2
  done
  stop
  return 1
}

# running PID: the process exists and is not a zombie (a server the fault
# test restarted is reparented to init, which may be slow to reap it).
running() {
  [ -r "/proc/$1/stat" ] || return 1
  local state
  state=$(sed -e 's/^.*) //' "/proc/$1/stat" 2>/dev/null | cut -d' ' -f1)
  [ -n "$state" ] && [ "$state" != Z ] && [ "$state" != X ]
}

# stop_servers kills every server whose pid file is under DIR and removes
# their files, keeping DIR and anything in it that start did not make.
stop_servers() {
  local f pid
  for f in "$dir"/*/redis.pid; do
    [ -f "$f" ] || continue
    pid=$(cat "$f")
    [ -n "$pid" ] && running "$pid" || continue
    # Only a redis-server we started: the pid file could be stale.
    grep -q redis-server "/proc/$pid/cmdline" 2>/dev/null || continue
    kill "$pid" 2>/dev/null || true
    for _ in $(seq 1 50); do
      running "$pid" || break
      sleep 0.1
    done
    running "$pid" && kill -9 "$pid" 2>/dev/null || true
  done
  # Only what start made: each server's directory and config (the TLS
  # server's directory also holds its certificate), env and the cluster
  # log; never DIR itself nor files others put there (start.log).
  local d
  for d in "$dir/standalone" "$dir/fault" "$dir/tls" "$dir"/cluster-[0-9]*; do
    [ -e "$d" ] || continue
    rm -rf "$d"
    rm -f "$d.conf"
  done
  rm -f "$dir/env" "$dir/cluster-create.log"
}

stop() {
  stop_servers
}

case "$cmd" in
  start) start ;;
  stop) stop ;;
  *)
    echo "usage: $0 start|stop DIR" >&2
    exit 2
    ;;
esac
