#!/usr/bin/env bash
# Sets up everything `make test` and `make demo` need on a fresh machine, and is
# cheap on a second run: the Python environment and every tool binary live in
# a cache directory keyed by what they were built from.
#
#   scripts/setup.sh            python env + system packages + tool binaries
#   scripts/setup.sh --python   python env only (lint, unit tests)
#   scripts/setup.sh --kind     everything above, plus what `make e2e-kind` needs: a Docker engine
#                               (docker.io installed and dockerd started when absent) and
#                               debootstrap; exits 1 with one line when Docker cannot be used
set -euo pipefail

root="$(cd "$(dirname "$0")/.." && pwd)"
cache="${SENTIENT_CACHE:-$HOME/.cache/sentient-operator}"
mkdir -p "$cache"
# Two setups at once (parallel make, several checkouts) would race on the venv.
exec 9>"$cache/.setup.lock"
flock 9

say() { printf '\033[1m==> %s\033[0m\n' "$*" >&2; }

python_bin="${PYTHON:-python3}"
if ! "$python_bin" -c 'import sys; sys.exit(sys.version_info < (3, 11))' 2>/dev/null; then
  echo "error: Python >= 3.11 is needed (found: $("$python_bin" --version 2>&1))" >&2
  exit 1
fi

# --- Python environment -------------------------------------------------------
# Every extra (runtime, operator, cli, test, dev): the checkout runs all of them, from
# requirements/dev.txt, which pins every distribution with its hashes (`make lock` writes it).
# Keyed by what is installed (the pins and hashes, not the comments, and the interpreter), so
# checkouts with the same lock share one environment and a new lock gets a new one beside it.
key="$( (grep -hv '^ *#' "$root/requirements/pip.txt" "$root/requirements/dev.txt"; "$python_bin" --version) | sha256sum | cut -c1-12)"
venv="$cache/venv-$key"
if [ ! -x "$venv/bin/python" ] || [ ! -f "$venv/.complete" ]; then
  say "creating Python environment $venv (first run: about 2 minutes)"
  rm -rf "$venv"
  "$python_bin" -m venv "$venv"
  # Dependencies only: the project runs from the checkout (PYTHONPATH), so one
  # environment serves every clone with the same lock. The installer first, hashed too.
  "$venv/bin/pip" install --quiet --require-hashes -r "$root/requirements/pip.txt"
  "$venv/bin/pip" install --quiet --require-hashes -r "$root/requirements/dev.txt"
  touch "$venv/.complete"
fi
ln -sfn "$venv" "$cache/venv"
# This checkout's own environment: the shared link above follows whichever checkout ran last.
ln -sfn "$venv" "$root/.venv"

if [ "${1:-}" = "--python" ]; then
  exit 0
fi

# --- System packages (Debian) ---------------------------------------------------
need_pkgs=()
command -v redis-server >/dev/null 2>&1 || need_pkgs+=(redis-server)
# The audit log's syslog sink is tested against a real rsyslogd (TLS through its gtls driver).
[ -x /usr/sbin/rsyslogd ] || need_pkgs+=(rsyslog)
ls /usr/lib/*/rsyslog/lmnsd_gtls.so >/dev/null 2>&1 || need_pkgs+=(rsyslog-gnutls)
# PostgreSQL server binaries (initdb, postgres) for the sessions tests, which start their own.
compgen -G "/usr/lib/postgresql/*/bin/initdb" >/dev/null || need_pkgs+=(postgresql)
# The dev dashboard's browser test (tests/test_devui_browser.py) drives the system Chromium
# (a GitHub runner's preinstalled Chrome and chromedriver serve as well).
command -v chromium >/dev/null 2>&1 || command -v google-chrome >/dev/null 2>&1 || need_pkgs+=(chromium)
command -v chromedriver >/dev/null 2>&1 || need_pkgs+=(chromium-driver)
# cgo (SQLite) of the hydra build (e2e/tools.py), the OAuth2/OIDC server of the auth tests.
command -v gcc >/dev/null 2>&1 || need_pkgs+=(gcc libc6-dev)
if [ "${1:-}" = "--kind" ]; then
  # The offline node image starts from a debootstrapped Debian (e2e/kind/images.py).
  command -v debootstrap >/dev/null 2>&1 || need_pkgs+=(debootstrap)
fi
if [ ${#need_pkgs[@]} -gt 0 ]; then
  say "installing Debian packages: ${need_pkgs[*]}"
  if [ "$(id -u)" -eq 0 ]; then sudo=""; else sudo="sudo"; fi
  $sudo apt-get update -qq >/dev/null
  DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq --no-install-recommends "${need_pkgs[@]}" >/dev/null
  # The package starts a system redis on 6379; the tests start their own.
  (command -v systemctl >/dev/null && $sudo systemctl disable --now redis-server >/dev/null 2>&1) || true
  # Likewise the system rsyslog: the tests start their own with a private config.
  (command -v systemctl >/dev/null && $sudo systemctl disable --now rsyslog >/dev/null 2>&1) || true
  # Likewise the system PostgreSQL cluster on 5432 (without systemd, the package's init script).
  (command -v systemctl >/dev/null && $sudo systemctl disable --now postgresql >/dev/null 2>&1) || true
  (command -v pg_ctlcluster >/dev/null && for c in /etc/postgresql/*/main; do
    [ -d "$c" ] && $sudo pg_ctlcluster "$(basename "$(dirname "$c")")" main stop >/dev/null 2>&1
  done) || true
fi

# --- Tool binaries: kube-*, kwok, etcd, kubectl, helm, bao ------------------------
if [ -f "$root/e2e/tools.py" ] || [ -d "$root/e2e/tools" ]; then
  say "checking tool binaries (first run builds Kubernetes from source: about 5-10 minutes on 2 cores)"
  (cd "$root" && PYTHONPATH="$root/operator:$root" "$venv/bin/python" -m e2e.tools ensure)
fi

if [ "${1:-}" = "--kind" ]; then
  # Exit code 3: everything else is ready, only Docker cannot be used here.
  "$root/scripts/docker-engine.sh" || exit 3
fi
