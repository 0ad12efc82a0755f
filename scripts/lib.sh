# Shared helpers for the service scripts. Source it; do not run it.

# free_port prints a TCP port on 127.0.0.1 that nothing listens on, and
# claims it (a directory per port under the claims dir, made atomically) so
# that service scripts starting side by side never pick the same one.
# Claims older than an hour are dropped. Ports come from below the kernel's
# ephemeral range: a port there may be the local end of an outgoing
# connection, or of one of the thousands in TIME_WAIT a test run leaves,
# and a server cannot bind it although nothing listens.
free_port() {
  local p lo=32768 hi=60999 first=10000 span claims="${TMPDIR:-/tmp}/botstate-port-claims"
  read -r lo hi </proc/sys/net/ipv4/ip_local_port_range 2>/dev/null || true
  span=$(( lo - first ))
  if [ "$span" -lt 2000 ]; then # an unusual range: use the ports above it, or any
    first=$(( hi < 63000 ? hi + 1 : 20000 )) span=$(( hi < 63000 ? 65535 - hi : 40000 ))
  fi
  mkdir -p "$claims"
  find "$claims" -mindepth 1 -maxdepth 1 -mmin +60 -exec rm -rf {} + 2>/dev/null || true
  for _ in $(seq 1 200); do
    p=$(( first + RANDOM % span ))
    if ! (exec 3<>"/dev/tcp/127.0.0.1/$p") 2>/dev/null && mkdir "$claims/$p" 2>/dev/null; then
      echo "$p"
      return 0
    fi
  done
  echo "free_port: no free port found" >&2
  return 1
}

# wait_port PORT SECONDS waits until something listens on 127.0.0.1:PORT.
wait_port() {
  local port=$1 secs=${2:-30} i
  for i in $(seq 1 $(( secs * 10 ))); do
    if (exec 3<>"/dev/tcp/127.0.0.1/$port") 2>/dev/null; then
      return 0
    fi
    sleep 0.1
  done
  echo "wait_port: nothing listens on 127.0.0.1:$port after ${secs}s" >&2
  return 1
}

# apt_install PKG... installs the Debian packages that are missing. The
# service scripts start side by side, so installs queue on a lock of their
# own (flock on $APT_LOCK) and wait up to ten minutes for dpkg's lock too
# (another apt run on the machine); when an install fails, apt's output is
# printed. Packages already installed cost one dpkg -s each.
APT_LOCK=${APT_LOCK:-${TMPDIR:-/tmp}/botstate-apt.lock}
apt_install() {
  local missing=() p
  for p in "$@"; do
    dpkg -s "$p" >/dev/null 2>&1 || missing+=("$p")
  done
  [ ${#missing[@]} -eq 0 ] && return 0
  local sudo="" log rc
  [ "$(id -u)" -ne 0 ] && sudo="sudo"
  log=$(mktemp "${TMPDIR:-/tmp}/botstate-apt-log.XXXXXX")
  if (
    if ! flock -w 900 9; then
      echo "another install held $APT_LOCK for 15 minutes" >"$log"
      exit 1
    fi
    still=()
    for p in "${missing[@]}"; do
      dpkg -s "$p" >/dev/null 2>&1 || still+=("$p") # installed while we waited?
    done
    [ ${#still[@]} -eq 0 ] && exit 0
    export DEBIAN_FRONTEND=noninteractive
    apt=($sudo apt-get -y -q -o DPkg::Lock::Timeout=600)
    "${apt[@]}" install "${still[@]}" >"$log" 2>&1 ||
      { "${apt[@]}" update >>"$log" 2>&1 && "${apt[@]}" install "${still[@]}" >>"$log" 2>&1; }
  ) 9>"$APT_LOCK"; then
    rc=0
  else
    rc=$?
  fi
  if [ "$rc" -ne 0 ]; then
    echo "apt_install: installing ${missing[*]} failed; apt said:" >&2
    sed 's/^/    /' "$log" >&2
  fi
  rm -f "$log"
  return "$rc"
}

# service_args CMD DIR exits with the usage of a service script unless both
# are given.
service_args() {
  if [ -z "${1:-}" ] || [ -z "${2:-}" ]; then
    echo "usage: $0 start|stop DIR" >&2
    exit 2
  fi
}
