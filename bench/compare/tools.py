"""The compiled parts of the side-by-side bench: wrk (Debian) and the Go fake upstream and TTFT probe.

The Go programs are built with the machine's Go into the cache, once per source
hash; they use the standard library only, so the build needs no download.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import subprocess
from dataclasses import dataclass
from pathlib import Path

GO_SOURCE = Path(__file__).resolve().parent / "go"


def cache_dir() -> Path:
    """Where the bench keeps what it builds and installs (``SENTIENT_CACHE``/bench-compare)."""
    base = os.environ.get("SENTIENT_CACHE") or str(Path.home() / ".cache" / "sentient-operator")
    path = Path(base) / "bench-compare"
    path.mkdir(parents=True, exist_ok=True)
    return path


def ensure_wrk() -> str:
    """Path of wrk; installs Debian's package when it is missing (the bench runs as root here)."""
    found = shutil.which("wrk")
    if found:
        return found
    if os.geteuid() != 0:
        raise SystemExit("wrk is missing: install Debian's package (sudo apt-get install -y wrk)")
    print("installing wrk (apt-get)", flush=True)
    if _apt("install", "-y", "wrk") != 0:
        # An old or empty package list: refresh it once, then try again.
        _apt("update")
        _apt("install", "-y", "wrk")
    found = shutil.which("wrk")
    if not found:
        raise SystemExit("wrk is still missing after apt-get install")
    return found


def _apt(*args: str) -> int:
    env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
    return subprocess.run(["apt-get", *args], env=env, stdout=subprocess.DEVNULL, check=False).returncode


def _go() -> str:
    found = shutil.which("go") or ("/usr/local/go/bin/go" if Path("/usr/local/go/bin/go").exists() else None)
    if not found:
        raise SystemExit("Go is needed to build the fake upstream (https://go.dev/doc/install)")
    return found


@dataclass(frozen=True)
class GoBinaries:
    """The built fake upstream and TTFT probe."""

    upstream: Path
    ttft: Path


def build_go() -> GoBinaries:
    """Build the fake upstream and the TTFT probe into the cache (once per source hash)."""
    digest = hashlib.sha256()
    for path in sorted(GO_SOURCE.rglob("*")):
        if path.is_file():
            digest.update(str(path.relative_to(GO_SOURCE)).encode() + b"\0" + path.read_bytes())
    out = cache_dir() / f"go-{digest.hexdigest()[:12]}"
    binaries = GoBinaries(out / "upstream", out / "ttft")
    if binaries.upstream.exists() and binaries.ttft.exists():
        return binaries
    out.mkdir(parents=True, exist_ok=True)
    # The local toolchain only: a go.mod asking for a newer one must not trigger a download.
    env = {**os.environ, "GOTOOLCHAIN": "local", "CGO_ENABLED": "0", "GOFLAGS": "-mod=mod"}
    for name in ("upstream", "ttft"):
        print(f"building {name} (go build)", flush=True)
        subprocess.run(
            [_go(), "build", "-trimpath", "-o", str(out / name), f"./{name}"],
            cwd=GO_SOURCE,
            env=env,
            check=True,
        )
    return binaries


def go_version() -> str:
    """``go version`` of the toolchain that built the upstream."""
    return subprocess.run([_go(), "version"], capture_output=True, text=True, check=False).stdout.strip()


def wrk_version(wrk: str) -> str:
    """Name and version from ``wrk -v`` (it exits non-zero after printing them)."""
    result = subprocess.run([wrk, "-v"], capture_output=True, text=True, check=False)
    first = (result.stdout or result.stderr).strip().splitlines()[0]
    return first.split(" Copyright", 1)[0]
