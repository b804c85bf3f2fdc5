"""Reading the hashed lock files under requirements/ (written by `make lock`)."""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
REQUIREMENTS = ROOT / "requirements"
_PIN = re.compile(r"^([A-Za-z0-9][A-Za-z0-9._-]*)==(\S+?)(?:\s*;\s*(.*?))?\s*\\?$")


@dataclass(frozen=True)
class Pin:
    """One pinned distribution of a lock file."""

    name: str
    version: str
    marker: str | None
    hashes: tuple[str, ...]


def normal(name: str) -> str:
    """The canonical form of a distribution name (PEP 503)."""
    return re.sub(r"[-_.]+", "-", name).lower()


def pins(name: str) -> list[Pin]:
    """The pins of ``requirements/<name>.txt``, each with its hashes."""
    out: list[Pin] = []
    current: tuple[str, str, str | None] | None = None
    hashes: list[str] = []
    for line in (REQUIREMENTS / f"{name}.txt").read_text().splitlines():
        stripped = line.strip()
        if not stripped or stripped.startswith("#"):
            continue
        if stripped.startswith("--hash="):
            hashes.append(stripped.removeprefix("--hash=").rstrip(" \\"))
            continue
        if current is not None:
            out.append(Pin(*current, tuple(hashes)))
        m = _PIN.match(stripped)
        assert m, f"requirements/{name}.txt: not a pin: {line!r}"
        current, hashes = (normal(m.group(1)), m.group(2), m.group(3)), []
    if current is not None:
        out.append(Pin(*current, tuple(hashes)))
    return out


def pinned_names(name: str) -> set[str]:
    """The canonical names of every distribution ``requirements/<name>.txt`` installs (any platform)."""
    return {pin.name for pin in pins(name)}
