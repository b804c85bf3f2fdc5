#!/usr/bin/env bash
# Builds the kind stage's Go and C programs (kind; kubelet, kubeadm, kube-proxy, CoreDNS and pause
# for the offline node image) in the background while `make test` runs pytest, at the lowest CPU
# priority, so that a cold CI run does not wait for them after the tests. The kind stage takes the
# same per-binary locks (e2e/kind/images.py) and waits for a build still running; a failed
# background build is simply redone there, where its error is reported.
#
#   scripts/kind-prebuild.sh start   start it (only where the kind stage can run), note its pid
#   scripts/kind-prebuild.sh stop    stop it (the tests failed: no kind stage follows)
set -euo pipefail

root="$(cd "$(dirname "$0")/.." && pwd)"
cache="${SENTIENT_CACHE:-$HOME/.cache/sentient-operator}"
pidfile="$cache/kind/prebuild.pid"
log="$cache/logs/kind-prebuild.log"

case "${1:-}" in
  start)
    # The kind stage runs where Docker works or where it can be installed (root); elsewhere it is
    # skipped, and so is this.
    if ! docker info >/dev/null 2>&1 && [ "$(id -u)" -ne 0 ]; then
      exit 0
    fi
    command -v go >/dev/null 2>&1 || exit 0
    mkdir -p "$cache/kind" "$cache/logs"
    # Not detached: Ctrl-C on `make test` reaches it as it reaches make.
    PYTHONPATH="$root/operator:$root" nice -n 19 "$cache/venv/bin/python" -m e2e.kind.images binaries \
      >"$log" 2>&1 </dev/null &
    echo $! >"$pidfile"
    echo "kind stage: building its programs in the background (log: $log)" >&2
    ;;
  stop)
    if [ -f "$pidfile" ]; then
      pid="$(cat "$pidfile")"
      rm -f "$pidfile"
      # The python process, the go builds it started and their compilers: deepest first.
      tree() { local child; for child in $(pgrep -P "$1" 2>/dev/null); do tree "$child"; done; echo "$1"; }
      kill -TERM $(tree "$pid") 2>/dev/null || true
    fi
    ;;
  *)
    echo "usage: scripts/kind-prebuild.sh start|stop" >&2
    exit 2
    ;;
esac
