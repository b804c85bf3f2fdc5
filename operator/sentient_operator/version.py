"""The distribution's version (``sentient --version``, ``sentient-operator --version``)."""

from __future__ import annotations

import tomllib
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path

DISTRIBUTION = "sentient-operator"
#: The checkout's pyproject.toml, for a run from a checkout without installing (PYTHONPATH).
_PYPROJECT = Path(__file__).resolve().parents[2] / "pyproject.toml"


def package_version() -> str:
    """The version from the installed package metadata (else the checkout's pyproject.toml)."""
    try:
        return version(DISTRIBUTION)
    except PackageNotFoundError:
        pass
    try:
        project = tomllib.loads(_PYPROJECT.read_text())["project"]
    except (OSError, KeyError, tomllib.TOMLDecodeError):
        return "unknown"
    return str(project.get("version", "unknown")) if project.get("name") == DISTRIBUTION else "unknown"
