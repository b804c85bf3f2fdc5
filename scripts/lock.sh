#!/usr/bin/env bash
# Refreshes the lock: uv.lock and requirements/*.txt (every dependency pinned with its hashes), from
# pyproject.toml. The one command to run after changing a dependency (`make lock` runs it):
#
#   scripts/lock.sh                          keep today's versions where pyproject.toml still allows them
#   scripts/lock.sh --upgrade                the newest allowed versions
#   scripts/lock.sh --upgrade-package NAME   of one package
#
# uv comes from the dev environment (the dev extra pins it); UV=/path/to/uv uses another one.
set -euo pipefail
root="$(cd "$(dirname "$0")/.." && pwd)"
python_bin="${PYTHON:-python3}"
if [ -z "${UV:-}" ]; then
  "$root/scripts/setup.sh" --python
  python_bin="$root/.venv/bin/python"
fi
exec "$python_bin" "$root/scripts/lock.py" "$@"
