"""Starting helper servers as child processes that cannot outlive the test run."""

from __future__ import annotations

import ctypes
import os
import shutil
import signal
import subprocess
from collections.abc import Mapping, Sequence
from pathlib import Path

_PR_SET_PDEATHSIG = 1


def _die_with_parent() -> None:  # pragma: no cover - runs in the child
    # Linux: the child gets SIGTERM when the test process dies, even by SIGKILL.
    try:
        ctypes.CDLL("libc.so.6", use_errno=True).prctl(_PR_SET_PDEATHSIG, signal.SIGTERM)
    except OSError:
        pass


def cache_dir() -> Path:
    """The project's tool cache (``SENTIENT_CACHE`` or ``~/.cache/sentient-operator``)."""
    return Path(os.environ.get("SENTIENT_CACHE", Path.home() / ".cache" / "sentient-operator"))


def find_binary(name: str) -> str | None:
    """``name`` from the tool cache's ``bin/``, else from PATH."""
    cached = cache_dir() / "bin" / name
    if cached.is_file() and os.access(cached, os.X_OK):
        return str(cached)
    return shutil.which(name)


def spawn(
    argv: Sequence[str],
    *,
    log_path: Path,
    env: Mapping[str, str] | None = None,
    max_lifetime: int = 1800,
    cwd: str | None = None,
    user: str | None = None,
) -> subprocess.Popen[bytes]:
    """Start ``argv`` with output to ``log_path``; it ends with its parent and after ``max_lifetime`` s.

    ``user`` runs it as that account (the caller must be root), for servers that refuse root.
    """
    timeout_bin = shutil.which("timeout")
    full = [timeout_bin, "-s", "TERM", str(max_lifetime), *argv] if timeout_bin else list(argv)
    log = open(log_path, "wb")  # noqa: SIM115 - handed to the child, closed in stop()
    return subprocess.Popen(
        full,
        stdout=log,
        stderr=subprocess.STDOUT,
        stdin=subprocess.DEVNULL,
        env=dict(env) if env is not None else None,
        cwd=cwd,
        preexec_fn=_die_with_parent,
        user=user,
    )


def stop(proc: subprocess.Popen[bytes], grace: float = 5.0) -> None:
    """SIGTERM, then SIGKILL after ``grace`` seconds."""
    if proc.poll() is None:
        proc.terminate()
        try:
            proc.wait(grace)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(grace)
