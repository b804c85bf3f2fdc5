#!/usr/bin/env python3
"""Print the requirements of one or more extras of pyproject.toml, one per line.

    python scripts/requirements.py runtime            # the runtime extra's own requirements
    python scripts/requirements.py runtime operator   # two extras together
    python scripts/requirements.py --all              # every extra

The project's own dependencies always come first; an extra that names the project itself
(``sentient-operator[runtime]``) is expanded in place. Tests that build separate environments
use it (tests/support/venvs.py); installs of the project's environments use the hashed lock
under requirements/ instead (docs/dev/dependencies.md). Standard library only.
"""

from __future__ import annotations

import re
import sys
import tomllib
from pathlib import Path

_NAME = re.compile(r"^\s*([A-Za-z0-9][A-Za-z0-9._-]*)\s*(?:\[([^\]]*)\])?")


def _normal(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def requirements(pyproject: Path, extras: list[str]) -> list[str]:
    """The requirement strings of ``extras`` (self-references expanded, duplicates dropped)."""
    project = tomllib.loads(pyproject.read_text())["project"]
    me = _normal(project["name"])
    optional: dict[str, list[str]] = project.get("optional-dependencies", {})
    out: list[str] = []
    seen_extras: set[str] = set()

    def add(reqs: list[str]) -> None:
        for req in reqs:
            m = _NAME.match(req)
            if m and _normal(m.group(1)) == me:
                for extra in (m.group(2) or "").split(","):
                    expand(extra.strip())
            elif req not in out:
                out.append(req)

    def expand(extra: str) -> None:
        if not extra or extra in seen_extras:
            return
        if extra not in optional:
            raise SystemExit(
                f"requirements.py: no extra {extra!r} in {pyproject} (have: {', '.join(optional)})"
            )
        seen_extras.add(extra)
        add(optional[extra])

    add(list(project.get("dependencies", [])))
    for extra in extras:
        expand(extra)
    return out


def main(argv: list[str]) -> int:
    """Command line: extras as arguments, ``--all`` for every extra, ``--pyproject PATH``."""
    pyproject = Path("pyproject.toml")
    if "--pyproject" in argv:
        i = argv.index("--pyproject")
        pyproject = Path(argv[i + 1])
        del argv[i : i + 2]
    if "--all" in argv:
        argv = list(tomllib.loads(pyproject.read_text())["project"].get("optional-dependencies", {}))
    print("\n".join(requirements(pyproject, argv)))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
