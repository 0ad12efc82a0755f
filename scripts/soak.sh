#!/usr/bin/env bash
# The long soak: the dispatcher under a bounded mixed workload with TTLs for
# five minutes on mem and five on Redis (internal/soak; CI runs 30 s of
# each), printing the heap and the store's items every two seconds. Starts
# the services as scripts/test.sh does. BOTSTATE_SOAK_DURATION overrides the
# time per backend.
set -euo pipefail
cd "$(dirname "$0")/.."
export BOTSTATE_SOAK_DURATION=${BOTSTATE_SOAK_DURATION:-5m}
exec bash scripts/test.sh -run TestSoakStaysFlat -v -timeout 60m ./internal/soak
