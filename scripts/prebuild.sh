#!/usr/bin/env bash
# Builds, in the background while `make test` runs pytest and at the lowest CPU priority, what only
# later tests need, so that a cold CI run does not wait for it in a row:
#   1. the test servers built with Go that `make setup` leaves out (ORY Hydra for the OIDC tests,
#      the OpenTelemetry Collector for the tracing tests: e2e/tools.py, "deferred" tools);
#   2. where the kind stage can run, its Go and C programs (kind; kubelet, kubeadm, kube-proxy,
#      CoreDNS and pause for the offline node image).
# A test or the kind stage that needs one of them takes the same per-tool lock (e2e/tools.py,
# e2e/kind/images.py) and waits for a build still running; a failed background build is simply
# redone there, where its error is reported.
#
#   scripts/prebuild.sh start   start it, note its pid
#   scripts/prebuild.sh stop    stop it (the tests failed: no kind stage follows)
set -euo pipefail

root="$(cd "$(dirname "$0")/.." && pwd)"
cache="${SENTIENT_CACHE:-$HOME/.cache/sentient-operator}"
pidfile="$cache/prebuild.pid"
log="$cache/logs/prebuild.log"

case "${1:-}" in
  start)
    command -v go >/dev/null 2>&1 || exit 0
    # The kind stage runs where Docker works or where it can be installed (root); elsewhere its
    # programs are not needed.
    kind=0
    if docker info >/dev/null 2>&1 || [ "$(id -u)" -eq 0 ]; then
      kind=1
    fi
    mkdir -p "$cache/logs"
    export PYTHONPATH="$root/operator:$root"
    py="$cache/venv/bin/python"
    # Not detached: Ctrl-C on `make test` reaches it as it reaches make.
    (
      nice -n 19 "$py" -m e2e.tools ensure hydra otelcol || true
      if [ "$kind" = 1 ]; then
        nice -n 19 "$py" -m e2e.kind.images binaries
      fi
    ) >"$log" 2>&1 </dev/null &
    echo $! >"$pidfile"
    echo "prebuild: building the later tests' programs in the background (log: $log)" >&2
    ;;
  stop)
    if [ -f "$pidfile" ]; then
      pid="$(cat "$pidfile")"
      rm -f "$pidfile"
      # The subshell, the python processes, the go builds they started and their compilers: deepest first.
      tree() { local child; for child in $(pgrep -P "$1" 2>/dev/null); do tree "$child"; done; echo "$1"; }
      kill -TERM $(tree "$pid") 2>/dev/null || true
    fi
    ;;
  *)
    echo "usage: scripts/prebuild.sh start|stop" >&2
    exit 2
    ;;
esac
