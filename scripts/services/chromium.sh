#!/usr/bin/env bash
# Chromium, for the dashboard's browser test (server/dashboard_browser_test.go).
#
#   chromium.sh start DIR   install Debian's chromium when missing and write
#                           "export BOTSTATE_CHROMIUM=..." to DIR/env
#   chromium.sh stop DIR    nothing to stop (the test starts and stops its own
#                           browser); remove DIR's env
#
# Not a server, but the same contract: scripts/test.sh makes it required
# under BOTSTATE_REQUIRE_BACKENDS=1.
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
# shellcheck source=../lib.sh
. "$here/../lib.sh"

cmd=${1:-}
dir=${2:-}
service_args "$cmd" "$dir"

case "$cmd" in
start)
  mkdir -p "$dir"
  [ -x /usr/bin/chromium ] || apt_install chromium fonts-dejavu-core
  /usr/bin/chromium --version >/dev/null
  echo "export BOTSTATE_CHROMIUM=/usr/bin/chromium" >"$dir/env"
  ;;
stop)
  rm -f "$dir/env"
  ;;
*)
  echo "usage: $0 start|stop DIR" >&2
  exit 2
  ;;
esac
