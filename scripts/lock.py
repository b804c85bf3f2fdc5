#!/usr/bin/env python3
"""Lock every dependency with its hashes: ``uv.lock``, and from it one pip file per environment.

    scripts/lock.sh                          # refresh: keeps today's versions where still allowed
    scripts/lock.sh --upgrade                # the newest allowed version of everything
    scripts/lock.sh --upgrade-package httpx  # of one package
    python scripts/lock.py --check           # exit 1 when pyproject.toml, uv.lock and requirements/
                                             # disagree (offline: reads no index)

``uv.lock`` is one universal resolution of every extra (any platform, Python >= 3.11), so the
images, the `sentient` command and the dev environment agree on every version. Each file under
``requirements/`` is its export for one environment: every distribution pinned, with the sha256
of each of its files on the index, for ``pip install --require-hashes``. Installing needs only pip;
locking needs uv (the dev extra installs it; ``UV`` names another binary). Standard library only.
"""

from __future__ import annotations

import difflib
import os
import shutil
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
REQUIREMENTS_DIR = "requirements"


@dataclass(frozen=True)
class Lock:
    """One exported requirements file: which part of uv.lock it holds, and who installs it."""

    name: str
    selection: tuple[str, ...]
    what: str
    hashes: bool = True

    @property
    def path(self) -> str:
        """Relative to the repository root."""
        return f"{REQUIREMENTS_DIR}/{self.name}.txt"

    def header(self) -> str:
        """The comment on top of the file (the export itself has none)."""
        use = (
            "# Every distribution pinned, with the sha256 of each of its files; install with\n"
            f"#   pip install --require-hashes -r {self.path}\n"
            if self.hashes
            else "# The same pins without hashes, as pip constraints (a constraints file cannot carry\n"
            f"# hashes): pip install -c {self.path} ... Never to install from.\n"
        )
        return (
            f"# {self.path}: {self.what}.\n{use}"
            "# Written by `make lock` (scripts/lock.py) from uv.lock; never edit it by hand.\n"
        )


LOCKS = (
    Lock("pip", ("--only-group", "installer"), "pip itself (dependency group `installer`), installed first"),
    Lock("runtime", ("--extra", "runtime"), "the `runtime` extra, for Dockerfile.runtime"),
    Lock("operator", ("--extra", "operator"), "the `operator` extra, for Dockerfile.operator"),
    Lock("cli", ("--extra", "cli"), "the `cli` extra, the `sentient` command"),
    Lock("test", ("--extra", "test"), "the `test` extra, what a custom agent's generated test needs"),
    Lock("dev", ("--all-extras",), "every extra, the development environment (scripts/setup.sh)"),
    Lock(
        "constraints",
        ("--all-extras",),
        "every extra, for tests that build separate environments",
        hashes=False,
    ),
)


def uv_binary() -> str:
    """``$UV``, else the uv beside this interpreter (the dev environment), else uv on PATH."""
    if os.environ.get("UV"):
        return os.environ["UV"]
    beside = Path(sys.executable).with_name("uv")
    if beside.is_file():
        return str(beside)
    found = shutil.which("uv")
    if found is None:
        raise SystemExit(
            "lock.py: uv not found: run `make setup-python` (the dev extra installs it) or set UV"
        )
    return found


def _uv(root: Path, *args: str) -> subprocess.CompletedProcess[str]:
    env = dict(os.environ)
    # Never fetch an interpreter: the lock is universal, any Python >= 3.11 resolves it.
    env.setdefault("UV_PYTHON_DOWNLOADS", "never")
    if "SENTIENT_CACHE" in os.environ:
        env.setdefault("UV_CACHE_DIR", str(Path(os.environ["SENTIENT_CACHE"]) / "uv"))
    return subprocess.run(
        [uv_binary(), *args], cwd=root, env=env, capture_output=True, text=True, check=False
    )


def export(root: Path, lock: Lock) -> str:
    """The content ``lock`` must have, from uv.lock as it is (no resolution, no network)."""
    done = _uv(
        root,
        "export",
        "--frozen",
        "--format",
        "requirements-txt",
        "--no-header",
        "--no-emit-project",
        *(() if lock.hashes else ("--no-hashes",)),
        *lock.selection,
    )
    if done.returncode != 0:
        raise SystemExit(f"lock.py: uv export {' '.join(lock.selection)} failed:\n{done.stderr}")
    return lock.header() + done.stdout


def refresh(root: Path, uv_args: list[str]) -> int:
    """``uv lock`` (with ``uv_args``, e.g. ``--upgrade``), then every export."""
    done = _uv(root, "lock", "--python", sys.executable, *uv_args)
    sys.stderr.write(done.stderr)
    if done.returncode != 0:
        return done.returncode
    (root / REQUIREMENTS_DIR).mkdir(exist_ok=True)
    for lock in LOCKS:
        text = export(root, lock)
        (root / lock.path).write_text(text)
        pins = sum(1 for line in text.splitlines() if "==" in line and not line.startswith("#"))
        print(f"wrote {lock.path} ({pins} pins)")
    return 0


def check(root: Path) -> list[str]:
    """What disagrees, one message each (empty: the lock matches pyproject.toml)."""
    problems: list[str] = []
    done = _uv(root, "lock", "--check", "--offline", "--python", sys.executable)
    if done.returncode != 0:
        tail = "\n".join(done.stderr.strip().splitlines()[-6:])
        problems.append(f"uv.lock does not match pyproject.toml's dependencies: run `make lock`\n{tail}")
        return problems
    for lock in LOCKS:
        path = root / lock.path
        want = export(root, lock)
        have = path.read_text() if path.is_file() else ""
        if have != want:
            diff = difflib.unified_diff(
                have.splitlines(),
                want.splitlines(),
                f"{lock.path} (committed)",
                "uv.lock's export",
                lineterm="",
            )
            problems.append(f"{lock.path} is stale: run `make lock`\n" + "\n".join(list(diff)[:40]))
    return problems


def main(argv: list[str]) -> int:
    """``--check`` (and ``--root DIR``, default this checkout); anything else goes to ``uv lock``."""
    root = ROOT
    if "--root" in argv:
        i = argv.index("--root")
        root = Path(argv[i + 1]).resolve()
        del argv[i : i + 2]
    if "--check" in argv:
        problems = check(root)
        for problem in problems:
            print(problem, file=sys.stderr)
        return 1 if problems else 0
    return refresh(root, argv)


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
