#!/usr/bin/env bash
# Static checks: gofmt, go vet, go mod tidy (go.mod and go.sum must need no
# change), staticcheck, and the tests of the scripts' own library
# (scripts/lib_test.sh). scripts/test.sh runs them before the tests.
set -uo pipefail
cd "$(dirname "$0")/.."
staticcheck=honnef.co/go/tools/cmd/staticcheck@v0.8.2
fail=0
unformatted=$(gofmt -l .)
if [ -n "$unformatted" ]; then
  echo "gofmt: these files need gofmt -w:" >&2
  echo "$unformatted" >&2
  fail=1
fi
go vet ./... || fail=1
if ! go mod tidy -diff; then
  echo "go mod tidy would change go.mod or go.sum (the diff above)" >&2
  fail=1
fi
go run "$staticcheck" ./... || fail=1
bash scripts/lib_test.sh || fail=1
[ "$fail" = 0 ] && echo "checks: gofmt, go vet, go mod tidy, staticcheck, lib_test.sh clean"
exit "$fail"
