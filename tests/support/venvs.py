"""Separate Python environments for tests whose packages must not enter the project's own.

Each lives in the tool cache as ``venv-<name>-<key>``, keyed by its requirement
lines and the Python version, built once (under a lock: parallel test runs
share it) with packages from the package index, never with the system's or the
dev environment's site-packages. The project itself is not installed into it:
it runs from the checkout (``PYTHONPATH``), as in the dev environment, so one
environment serves every checkout with the same requirements.
"""

from __future__ import annotations

import fcntl
import hashlib
import os
import shutil
import subprocess
import sys
from collections.abc import Sequence
from pathlib import Path

from tests.support.procs import cache_dir

REPO = Path(__file__).resolve().parents[2]


def extra_requirements(*extras: str) -> list[str]:
    """The requirement lines of extras of pyproject.toml (scripts/requirements.py)."""
    out = subprocess.run(
        [sys.executable, str(REPO / "scripts" / "requirements.py"), *extras],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    return [line for line in out.splitlines() if line.strip()]


def venv(name: str, requirements: Sequence[str], *, constraints: Path | None = None) -> Path:
    """The ``bin/python`` of a cached environment holding ``requirements`` (built on first use)."""
    key_text = "\n".join([*requirements, sys.version, constraints.read_text() if constraints else ""])
    key = hashlib.sha256(key_text.encode()).hexdigest()[:12]
    root = cache_dir() / f"venv-{name}-{key}"
    python = root / "bin" / "python"
    done = root / ".complete"
    if done.exists():
        return python
    cache_dir().mkdir(parents=True, exist_ok=True)
    with (cache_dir() / f".venv-{name}.lock").open("w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if done.exists():
            return python
        shutil.rmtree(root, ignore_errors=True)
        # The interpreter's own base, not the dev environment's (whose site-packages hold the lock's pins).
        base = getattr(sys, "_base_executable", sys.executable)
        subprocess.run([base, "-m", "venv", str(root)], check=True, timeout=300)
        reqs = root / "requirements.txt"
        reqs.write_text("\n".join(requirements) + "\n")
        command = [
            str(python),
            "-m",
            "pip",
            "install",
            "--quiet",
            "--disable-pip-version-check",
            "-r",
            str(reqs),
        ]
        if constraints is not None:
            command += ["-c", str(constraints)]
        subprocess.run(command, check=True, timeout=900, env={**os.environ, "PIP_NO_INPUT": "1"})
        done.touch()
    return python


def project_env(python: Path, *extra_paths: Path) -> dict[str, str]:
    """Environment for a child process of ``python`` that imports the project from the checkout."""
    paths = [str(p) for p in extra_paths] + [str(REPO / "operator"), str(REPO)]
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "VIRTUAL_ENV", "PYTHONHOME")}
    env["PYTHONPATH"] = os.pathsep.join(paths)
    env["PATH"] = f"{python.parent}{os.pathsep}{env.get('PATH', '')}"
    return env


def run_project_tests(project: Path, python: Path, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    """pytest of a generated project, rooted in it (the repository's pytest settings do not apply)."""
    return subprocess.run(
        [
            str(python),
            "-m",
            "pytest",
            "-q",
            "-p",
            "no:cacheprovider",
            "--rootdir",
            str(project),
            str(project),
        ],
        cwd=project,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )


def lint_project(project: Path) -> subprocess.CompletedProcess[str]:
    """ruff over a generated project with common rules only (not the repository's settings)."""
    ruff = Path(sys.executable).with_name("ruff")
    return subprocess.run(
        [str(ruff), "check", "--isolated", "--select", "E,F,W,I,B,UP", "--line-length", "120", str(project)],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
