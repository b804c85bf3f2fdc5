"""The hashed lock: uv.lock and requirements/*.txt agree with pyproject.toml, and every install uses them.

`make lock` writes them (scripts/lock.py); docs/dev/dependencies.md says why and how.
"""

from __future__ import annotations

import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from e2e.kind import images
from tests.support import locks

ROOT = locks.ROOT
LOCK_SCRIPT = ROOT / "scripts" / "lock.py"
LOCK_NAMES = ("pip", "runtime", "operator", "cli", "test", "dev")


def _check(root: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, str(LOCK_SCRIPT), "--check", "--root", str(root)],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )


def _copy_of_the_lock(tmp_path: Path) -> Path:
    for name in ("pyproject.toml", "uv.lock", "README.md"):
        shutil.copy(ROOT / name, tmp_path / name)
    shutil.copytree(ROOT / "requirements", tmp_path / "requirements")
    return tmp_path


def test_the_lock_matches_pyproject() -> None:
    done = _check(ROOT)
    assert done.returncode == 0, done.stderr


def test_a_dependency_added_to_pyproject_without_make_lock_is_drift(tmp_path: Path) -> None:
    root = _copy_of_the_lock(tmp_path)
    pyproject = root / "pyproject.toml"
    text = pyproject.read_text()
    assert '  "python-ulid>=3.0",\n' in text
    pyproject.write_text(text.replace('  "python-ulid>=3.0",\n', '  "python-ulid>=3.0",\n  "six>=1.16",\n'))
    done = _check(root)
    assert done.returncode == 1
    assert "uv.lock does not match pyproject.toml" in done.stderr and "make lock" in done.stderr


def test_a_narrowed_range_is_drift_too(tmp_path: Path) -> None:
    # Still satisfied by today's pin, but the lock records the ranges it was made from.
    root = _copy_of_the_lock(tmp_path)
    pyproject = root / "pyproject.toml"
    pyproject.write_text(pyproject.read_text().replace('"httpx>=0.27,<1"', '"httpx>=0.28,<1"'))
    assert _check(root).returncode == 1


def test_an_exported_file_that_no_longer_matches_uv_lock_is_drift(tmp_path: Path) -> None:
    root = _copy_of_the_lock(tmp_path)
    runtime = root / "requirements" / "runtime.txt"
    runtime.write_text(re.sub(r"^httpx==\S+", "httpx==0.27.0", runtime.read_text(), flags=re.M))
    done = _check(root)
    assert done.returncode == 1
    assert "requirements/runtime.txt is stale" in done.stderr


@pytest.mark.parametrize("name", LOCK_NAMES)
def test_every_pin_carries_sha256_hashes(name: str) -> None:
    pins = locks.pins(name)
    assert pins
    for pin in pins:
        assert pin.hashes, f"requirements/{name}.txt: {pin.name} has no hash"
        assert all(re.fullmatch(r"sha256:[0-9a-f]{64}", h) for h in pin.hashes), pin


def test_every_file_agrees_with_the_dev_environment_on_versions() -> None:
    # By name: a dev-only package may need a shared one under a wider marker (selenium's trio
    # wants cffi on Windows too), which changes the marker in dev.txt, never the version.
    dev = {p.name: p.version for p in locks.pins("dev")}
    for name in ("runtime", "operator", "cli", "test"):
        for pin in locks.pins(name):
            assert dev.get(pin.name) == pin.version, (name, pin)


def test_the_constraints_are_the_dev_pins_without_hashes() -> None:
    # For tests whose separate environments are constrained to the tested versions (pip -c).
    constraints = locks.pins("constraints")
    assert all(not pin.hashes for pin in constraints)
    assert {(p.name, p.version, p.marker) for p in constraints} == {
        (p.name, p.version, p.marker) for p in locks.pins("dev")
    }


def test_the_universal_lock_serves_debians_python() -> None:
    # The offline images run Debian's Python 3.11.2: redis needs async-timeout below 3.11.3.
    markers = {p.name: p.marker for p in locks.pins("runtime")}
    assert "async-timeout" in markers and "3.11.3" in (markers["async-timeout"] or "")


def _pip_installs(text: str) -> list[str]:
    """Every ``pip install`` command of a Dockerfile or shell script (continuation lines joined)."""
    joined = re.sub(r"\\\n\s*", " ", text)
    return [m.group(0) for m in re.finditer(r"pip\"? install[^\n&]*", joined)]


@pytest.mark.parametrize(
    ("path", "locked"),
    [
        ("Dockerfile.runtime", ["pip.txt", "runtime.txt"]),
        ("Dockerfile.operator", ["pip.txt", "operator.txt"]),
        ("scripts/setup.sh", ["requirements/pip.txt", "requirements/dev.txt"]),
    ],
)
def test_every_install_is_from_a_hashed_lock(path: str, locked: list[str]) -> None:
    installs = _pip_installs((ROOT / path).read_text())
    assert len(installs) == len(locked), installs
    for command, file in zip(installs, locked, strict=True):
        plain = command.replace('"', "").replace("$root/", "").strip()
        assert "--require-hashes" in plain and plain.endswith(f"-r {file}"), command


@pytest.mark.parametrize(
    ("dockerfile", "lock"), [("Dockerfile.runtime", "runtime"), ("Dockerfile.operator", "operator")]
)
def test_the_images_copy_their_lock_and_the_kind_build_keys_on_it(dockerfile: str, lock: str) -> None:
    text = (ROOT / dockerfile).read_text()
    assert re.search(rf"^COPY requirements/pip\.txt requirements/{lock}\.txt \./$", text, re.M)
    context = (ROOT / ".dockerignore").read_text().splitlines()
    assert f"!requirements/{lock}.txt" in context and "!requirements/pip.txt" in context
    # A lock change rebuilds the kind images (their cache key hashes these inputs).
    assert {f"requirements/{lock}.txt", "requirements/pip.txt"} <= set(images.PROJECT_INPUTS)
