#!/usr/bin/env bash
# Runs every fuzz target of the project briefly, one after another (go test
# fuzzes one target per command), each for FUZZTIME (default 6s): for the
# eleven targets, under two minutes with the build. scripts/test.sh runs it
# on a full run.
#
#   scripts/fuzz.sh                  every target
#   scripts/fuzz.sh platform/slack   the targets whose "DIR FuzzName" (as
#                                    in "./platform/slack FuzzEventsAPI")
#                                    holds the text
#   FUZZTIME=60s scripts/fuzz.sh FuzzKeyEncoding
#
# Targets are found by their declaration (func FuzzXxx in a _test.go file).
# The seeds each run starts from are the f.Add calls and the package's
# testdata/fuzz/FuzzXxx/ files (go test's corpus format), which plain
# go test runs as regression tests.
#
# When a run finds a failure, go test leaves the failing input in
# testdata/fuzz/FuzzXxx/ of its package: the script goes on with the other
# targets, then fails naming each. Fix the bug and commit the input as a
# regression seed.
set -uo pipefail
cd "$(dirname "$0")/.."
fuzztime=${FUZZTIME:-6s}
# Minimizing each input that widens coverage may take up to a minute by
# default, longer than the whole run; a failing input is minimized within
# this too.
minimize=${FUZZMINIMIZETIME:-2s}
filter=${1:-}

targets=()
while IFS= read -r line; do
  file=${line%%:*}
  name=${line#*:func }
  name=${name%%(*}
  dir=$(dirname "$file")
  [ -z "$filter" ] || [[ "$dir $name" == *"$filter"* ]] || continue
  targets+=("$dir $name")
done < <(grep -rE --include='*_test.go' -o '^func Fuzz[A-Za-z0-9_]*\(' . | grep -v '^\./\.git/' | sort)
if [ ${#targets[@]} -eq 0 ]; then
  echo "fuzz: no fuzz target matches ${filter:-anything}" >&2
  exit 1
fi

log=$(mktemp "${TMPDIR:-/tmp}/botstate-fuzz.XXXXXX")
trap 'rm -f "$log"' EXIT
failed=()
start=$SECONDS
for t in "${targets[@]}"; do
  read -r dir name <<<"$t"
  go test -run '^$' -fuzz "^$name\$" -fuzztime "$fuzztime" -fuzzminimizetime "$minimize" "$dir" >"$log" 2>&1
  rc=$?
  execs=$(grep -o 'execs: [0-9]*' "$log" | tail -1)
  if [ $rc -eq 0 ]; then
    printf 'fuzz: %-28s %-24s ok    %s\n' "$dir" "$name" "${execs:-execs: ?}"
  else
    printf 'fuzz: %-28s %-24s FAIL  %s\n' "$dir" "$name" "${execs:-execs: ?}"
    sed 's/^/    /' "$log" | tail -40
    failed+=("$dir $name")
  fi
done
if [ ${#failed[@]} -gt 0 ]; then
  echo "fuzz: ${#failed[@]} target(s) failed; each failing input is in its package's testdata/fuzz/<target>/:" >&2
  printf '    %s\n' "${failed[@]}" >&2
  exit 1
fi
echo "fuzz: ${#targets[@]} targets, ${fuzztime} each, clean in $(( SECONDS - start ))s"
