#!/usr/bin/env bash
# Tests of scripts/lib.sh's apt_install, with fake apt-get and dpkg on PATH
# (run by scripts/check.sh): installs started side by side run one at a
# time, each package is installed once, and a failed install shows apt's
# output.
set -uo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
mkdir -p "$tmp/bin"
# dpkg -s PKG succeeds once the fake apt-get installed PKG.
cat >"$tmp/bin/dpkg" <<'FAKE'
#!/usr/bin/env bash
[ "$1" = -s ] && grep -qx "$2" "$FAKE_STATE/installed" 2>/dev/null
FAKE
# apt-get install PKG...: fails when another install runs at the same time
# or when a package is named "broken"; otherwise takes a moment and records
# the packages.
cat >"$tmp/bin/apt-get" <<'FAKE'
#!/usr/bin/env bash
for a in "$@"; do [ "$a" = update ] && exit 0; done
mkdir "$FAKE_STATE/running" 2>/dev/null || { echo "E: Could not get lock /var/lib/dpkg/lock-frontend" >&2; exit 100; }
trap 'rmdir "$FAKE_STATE/running"' EXIT
sleep 0.3
seen=0
for a in "$@"; do
  [ "$a" = install ] && { seen=1; continue; }
  [ "$seen" = 1 ] && case "$a" in -*) ;; broken) echo "E: Unable to locate package broken" >&2; exit 100 ;; *) echo "$a" >>"$FAKE_STATE/installed"; echo "$a" >>"$FAKE_STATE/log" ;; esac
done
FAKE
chmod +x "$tmp/bin/dpkg" "$tmp/bin/apt-get"
export PATH="$tmp/bin:$PATH" FAKE_STATE="$tmp" APT_LOCK="$tmp/apt.lock"
# shellcheck source=lib.sh
. "$here/lib.sh"
sudo() { "$@"; } # in case the tests run as a user
fail=0

# Four installs at once, two of the same package.
for p in redis-server python3 npm redis-server; do
  apt_install "$p" 2>"$tmp/err.$p.$RANDOM" &
done
wait
for p in redis-server python3 npm; do
  n=$(grep -cx "$p" "$tmp/log")
  [ "$n" = 1 ] || { echo "FAIL: $p installed $n times" >&2; fail=1; }
done
if cat "$tmp"/err.* | grep -q .; then
  echo "FAIL: installs side by side failed:" >&2
  cat "$tmp"/err.* >&2
  fail=1
fi
# Already installed: nothing runs.
apt_install redis-server python3 || { echo "FAIL: a no-op install failed" >&2; fail=1; }
[ "$(wc -l <"$tmp/log")" = 3 ] || { echo "FAIL: a no-op install ran apt" >&2; fail=1; }
# A failing install returns non-zero and shows apt's message.
if apt_install broken 2>"$tmp/broken.err"; then
  echo "FAIL: a failing install succeeded" >&2
  fail=1
fi
grep -q "Unable to locate package broken" "$tmp/broken.err" || {
  echo "FAIL: a failing install hid apt's output:" >&2
  cat "$tmp/broken.err" >&2
  fail=1
}
[ "$fail" = 0 ] && echo "lib_test.sh: apt_install ok"
exit "$fail"
