#!/usr/bin/env bash
# Makes a Docker engine usable for `make e2e-kind`, or says in one line why it cannot.
#
#   scripts/docker-engine.sh          ensure: install docker.io (Debian) and start dockerd when absent
#   scripts/docker-engine.sh --check  exit 0 when `docker info` works, else print why and exit 1
#
# An engine that already runs (systemd, Docker Desktop, a CI service) is used as it is. Only an
# engine started here gets the capability shim (e2e/kind/node/files/usr/local/bin/sentient-runc),
# and only when this host's capability bounding set is not full: there `docker run --privileged`,
# which kind needs, fails.
# The engine started here logs to $SENTIENT_CACHE/logs/dockerd.log and keeps running afterwards
# (like a system service); stop it with: kill "$(cat /var/run/docker.pid)".
set -euo pipefail

root="$(cd "$(dirname "$0")/.." && pwd)"
cache="${SENTIENT_CACHE:-$HOME/.cache/sentient-operator}"
say() { printf '\033[1m==> %s\033[0m\n' "$*" >&2; }
why() { echo "docker: $*" >&2; exit 1; }

if docker info >/dev/null 2>&1; then
  exit 0
fi
[ "${1:-}" = "--check" ] && why "no usable Docker engine ($(docker info 2>&1 | grep -m1 -iE 'error|cannot|denied' || echo 'docker not installed'))"

if [ "$(id -u)" -ne 0 ]; then
  command -v docker >/dev/null 2>&1 || why "docker is not installed and this user is not root (install docker.io, or run as root)"
  why "the Docker engine is not reachable and this user is not root: start it or add this user to the docker group"
fi

if ! command -v dockerd >/dev/null 2>&1; then
  say "installing Debian's docker.io"
  apt-get update -qq >/dev/null
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends docker.io iptables jq >/dev/null \
    || why "apt-get install docker.io failed"
fi
# A system service manager starts it the ordinary way.
if [ -d /run/systemd/system ] && systemctl start docker >/dev/null 2>&1 && docker info >/dev/null 2>&1; then
  exit 0
fi

args=()
# Bit 24 is CAP_SYS_RESOURCE; any missing capability makes --privileged fail the same way.
bounding="$(awk '/^CapBnd:/ {print $2}' /proc/self/status)"
last_cap="$(cat /proc/sys/kernel/cap_last_cap 2>/dev/null || echo 40)"
full="$(printf '%x' $(( (1 << (last_cap + 1)) - 1 )))"
if [ "$((16#$bounding))" -ne "$((16#$full))" ]; then
  shim="$cache/bin/sentient-runc"
  mkdir -p "$cache/bin"
  command -v jq >/dev/null 2>&1 || DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends jq >/dev/null
  install -m 0755 "$root/e2e/kind/node/files/usr/local/bin/sentient-runc" "$shim"
  say "capability bounding set $bounding is not full: dockerd runs containers through $shim"
  args+=(--add-runtime "sentient-runc=$shim" --default-runtime sentient-runc)
fi
mkdir -p "$cache/logs"
say "starting dockerd (log: $cache/logs/dockerd.log)"
setsid nohup dockerd "${args[@]}" >>"$cache/logs/dockerd.log" 2>&1 </dev/null 9>&- &
for _ in $(seq 1 60); do
  docker info >/dev/null 2>&1 && exit 0
  sleep 0.5
done
why "dockerd did not come up within 30 s; see $cache/logs/dockerd.log"
