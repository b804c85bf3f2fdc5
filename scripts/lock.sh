#!/usr/bin/env bash
# Regenerates requirements.lock: every extra of pyproject.toml resolved together in a fresh
# environment, frozen. The images and `make setup` install with it as pip constraints, so that
# every environment gets the versions the tests ran with.
#
#   scripts/lock.sh
set -euo pipefail
root="$(cd "$(dirname "$0")/.." && pwd)"
python_bin="${PYTHON:-python3}"
tmp="$(mktemp -d)"
trap 'rm -rf "$tmp"' EXIT
"$python_bin" -m venv "$tmp/venv"
"$tmp/venv/bin/pip" install --quiet --upgrade pip
"$python_bin" "$root/scripts/requirements.py" --pyproject "$root/pyproject.toml" --all > "$tmp/requirements.txt"
"$tmp/venv/bin/pip" install --quiet -r "$tmp/requirements.txt"
{
  echo "# The versions every environment installs (pip constraints): the images (each its extra, see"
  echo "# scripts/requirements.py) and the dev environment of scripts/setup.sh. Regenerate with"
  echo "# scripts/lock.sh after changing a dependency in pyproject.toml."
  "$tmp/venv/bin/pip" freeze --exclude-editable
} > "$root/requirements.lock"
echo "wrote $root/requirements.lock ($(grep -c '==' "$root/requirements.lock") pins)"
