#!/usr/bin/env bash
# Runs every test of the project against real servers.
#
# For each service script scripts/services/<name>.sh it runs
# "<name>.sh start DIR", which installs what is missing, starts the server on
# free loopback ports, and writes "export VAR=url" lines to DIR/env; on a
# full run, while they start, it runs the static checks (scripts/check.sh)
# and then every fuzz target briefly (scripts/fuzz.sh); then go test with
# the race detector; then "<name>.sh stop DIR" for each, whatever happened.
# A fuzz failure fails the run after the tests. Extra arguments go to go
# test (default: ./...).
#
# With BOTSTATE_REQUIRE_BACKENDS=1 (as CI runs it) a service that fails to
# start fails the run; otherwise its backend's tests skip with a message.
set -uo pipefail
cd "$(dirname "$0")/.."
root=$(pwd)
state=$(mktemp -d "${TMPDIR:-/tmp}/botstate-test.XXXXXX")
services=()
for f in scripts/services/*.sh; do
  [ -e "$f" ] && services+=("$(basename "$f" .sh)")
done

stop_all() {
  for s in "${services[@]}"; do
    [ -d "$state/$s" ] && bash "$root/scripts/services/$s.sh" stop "$state/$s" >/dev/null 2>&1
  done
  rm -rf "$state"
}
trap stop_all EXIT
trap 'exit 130' INT TERM

# Start the services side by side; each logs to DIR/start.log.
pids=()
for s in "${services[@]}"; do
  mkdir -p "$state/$s"
  bash scripts/services/$s.sh start "$state/$s" >"$state/$s/start.log" 2>&1 &
  pids+=($!)
done
# While they start: the static checks, then the short fuzz runs (they need
# no service), on a full run (no arguments).
if [ $# -eq 0 ] && ! bash scripts/check.sh; then
  echo "static checks failed" >&2
  for p in "${pids[@]}"; do wait "$p"; done
  exit 1
fi
fuzz_failed=0
if [ $# -eq 0 ] && ! bash scripts/fuzz.sh; then
  fuzz_failed=1
fi
failed=0
for i in "${!services[@]}"; do
  s=${services[$i]}
  if wait "${pids[$i]}" && [ -f "$state/$s/env" ]; then
    # shellcheck disable=SC1090
    . "$state/$s/env"
    echo "started $s"
  else
    echo "FAILED to start $s; its log:" >&2
    sed 's/^/    /' "$state/$s/start.log" >&2
    failed=1
  fi
done
if [ "$failed" = 1 ] && [ "${BOTSTATE_REQUIRE_BACKENDS:-}" = 1 ]; then
  echo "a service did not start and BOTSTATE_REQUIRE_BACKENDS=1" >&2
  exit 1
fi

args=("$@")
[ ${#args[@]} -eq 0 ] && args=(./...)
go test -race -count=1 -timeout 20m "${args[@]}"
rc=$?
if [ "$fuzz_failed" = 1 ]; then
  echo "fuzzing found a failure (above); its input is in the package's testdata/fuzz/" >&2
  [ "$rc" = 0 ] && rc=1
fi
exit "$rc"
