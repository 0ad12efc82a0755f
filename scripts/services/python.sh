#!/usr/bin/env bash
# Python 3, for the test that runs examples/python against a live server.
#
#   python.sh start DIR   install python3 from Debian's packages when missing
#                         and write "export BOTSTATE_PYTHON=..." to DIR/env
#   python.sh stop DIR    nothing to stop; remove DIR's env
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
  command -v python3 >/dev/null 2>&1 || apt_install python3
  py=$(command -v python3)
  "$py" -c 'import json, urllib.request, base64, uuid, datetime' # the example's modules
  echo "export BOTSTATE_PYTHON='$py'" >"$dir/env"
  ;;
stop)
  rm -f "$dir/env"
  ;;
*)
  echo "usage: $0 start|stop DIR" >&2
  exit 2
  ;;
esac
