"""A real ``redis-server`` for tests and benchmarks, on 127.0.0.1, without persistence.

The binary comes from the Debian package ``redis-server`` (installed by
``scripts/setup.sh``). ``stop()`` and ``start()`` keep the port, so tests can
kill Redis mid-run and bring it back where clients expect it.
"""

from __future__ import annotations

import contextlib
import shutil
import subprocess
import tempfile
from collections.abc import Iterator, Sequence
from pathlib import Path
from types import TracebackType

import pytest

from tests.support.net import free_port, wait_for_port


class RedisUnavailable(RuntimeError):
    """redis-server is not installed."""


def redis_server_binary() -> str:
    """Path of redis-server, or ``RedisUnavailable`` with how to get it."""
    path = shutil.which("redis-server")
    if path is None:
        raise RedisUnavailable(
            "redis-server not found: install the Debian package `redis-server` (scripts/setup.sh does)"
        )
    return path


class RedisServer:
    """One redis-server process in its own temporary directory."""

    def __init__(
        self, port: int | None = None, *, extra_args: Sequence[str] = (), config_text: str | None = None
    ) -> None:
        """Choose a free port now; nothing runs until ``start``.

        ``extra_args`` go after the common options (``--cluster-enabled yes``, ``--replicaof ...``);
        ``config_text`` is written to a config file given first (Sentinel needs one it can rewrite).
        """
        self.binary = redis_server_binary()
        self.port = port or free_port()
        self.extra_args = list(extra_args)
        self._dir = Path(tempfile.mkdtemp(prefix="sentient-redis-"))
        self._config_text = config_text
        self._proc: subprocess.Popen[bytes] | None = None

    @property
    def address(self) -> str:
        """``127.0.0.1:port``."""
        return f"127.0.0.1:{self.port}"

    @property
    def directory(self) -> Path:
        """The server's working directory (its log is ``redis.log`` there)."""
        return self._dir

    @property
    def url(self) -> str:
        """redis:// URL of this server."""
        return f"redis://127.0.0.1:{self.port}/0"

    @property
    def pid(self) -> int | None:
        """The server's process id while it runs (to pin it to a core in benches)."""
        return self._proc.pid if self.running and self._proc is not None else None

    @property
    def running(self) -> bool:
        """True while the process is alive."""
        return self._proc is not None and self._proc.poll() is None

    def start(self) -> RedisServer:
        """Start (or restart on the same port) and wait until it accepts connections."""
        if self.running:
            return self
        config: list[str] = []
        if self._config_text is not None:
            path = self._dir / "redis.conf"
            if not path.exists():  # Sentinel rewrites its file; a restart keeps what it learnt
                path.write_text(self._config_text)
            config = [str(path)]
        args = [
            self.binary,
            *config,
            "--port", str(self.port),
            "--bind", "127.0.0.1",
            "--save", "",
            "--appendonly", "no",
            "--dir", str(self._dir),
            "--daemonize", "no",
            "--protected-mode", "yes",
            "--loglevel", "warning",
            "--logfile", str(self._dir / "redis.log"),
            *self.extra_args,
        ]  # fmt: skip
        self._proc = subprocess.Popen(args, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        try:
            wait_for_port(self.port, timeout=15)
        except TimeoutError:
            self.stop()
            raise
        return self

    def stop(self) -> None:
        """Kill the server (SIGKILL: a crash, not a polite shutdown); state is lost."""
        if self._proc is None:
            return
        if self._proc.poll() is None:
            self._proc.kill()
            self._proc.wait(timeout=10)
        self._proc = None

    def close(self) -> None:
        """Stop and remove the temporary directory."""
        self.stop()
        shutil.rmtree(self._dir, ignore_errors=True)

    def __enter__(self) -> RedisServer:
        return self.start()

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()


@contextlib.contextmanager
def redis_or_skip() -> Iterator[RedisServer]:
    """A running server for a test fixture; skips the test where redis-server is not installed."""
    try:
        server = RedisServer()
    except RedisUnavailable as exc:
        pytest.skip(str(exc))
    with server:
        yield server
