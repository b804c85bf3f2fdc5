"""A real PostgreSQL server for tests and benchmarks, on 127.0.0.1, in a temporary directory.

The binaries come from the Debian package ``postgresql`` (installed by ``scripts/setup.sh``,
which stops the system cluster the package starts): ``initdb`` and ``postgres`` from
``/usr/lib/postgresql/<version>/bin``. The cluster is made fresh for each server with a
password-protected superuser (so DSNs carry a password, as in production) and runs with
``fsync=off``: fast to start, nothing worth keeping.

initdb and postgres refuse to run as root. As root (CI containers, this project's machines)
both run as the ``postgres`` account the Debian package creates, which owns the temporary
directory; as any other user they run as that user.

``stop()`` is PostgreSQL's fast shutdown (clients are disconnected, as in a restart or failover)
and ``start()`` brings the same cluster back on the same port, so tests can restart the
database under a running client.
"""

from __future__ import annotations

import contextlib
import os
import pwd
import secrets
import shutil
import signal
import subprocess
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from types import TracebackType

import pytest

from tests.support import procs
from tests.support.net import free_port

SUPERUSER = "sentient"
DATABASE = "postgres"
SERVICE_ACCOUNT = "postgres"


class PostgresUnavailable(RuntimeError):
    """The PostgreSQL server binaries (or, as root, an account to run them) are missing."""


def postgres_bin_dir() -> Path:
    """The newest ``/usr/lib/postgresql/<version>/bin`` holding initdb and postgres."""
    found = [p for p in Path("/usr/lib/postgresql").glob("*/bin") if (p / "initdb").is_file()]
    if not found:
        raise PostgresUnavailable(
            "PostgreSQL server binaries not found: install the Debian package `postgresql` "
            "(scripts/setup.sh does)"
        )
    return max(found, key=lambda p: int(p.parent.name) if p.parent.name.isdigit() else 0)


def run_as() -> str | None:
    """The account the server runs as: ``postgres`` when we are root, else ourselves (None)."""
    if os.geteuid() != 0:
        return None
    try:
        pwd.getpwnam(SERVICE_ACCOUNT)
    except KeyError as exc:
        raise PostgresUnavailable(
            f"running as root and no `{SERVICE_ACCOUNT}` account to run PostgreSQL as "
            "(the Debian package creates it)"
        ) from exc
    return SERVICE_ACCOUNT


class PostgresServer:
    """One PostgreSQL cluster in its own temporary directory."""

    def __init__(self, port: int | None = None) -> None:
        """Create the cluster now (initdb, about a second); nothing runs until ``start``."""
        self.bin = postgres_bin_dir()
        self.user = run_as()
        self.port = port or free_port()
        self.password = secrets.token_urlsafe(18)
        self._dir = Path(tempfile.mkdtemp(prefix="sentient-pg-"))
        self.data = self._dir / "data"
        self._proc: subprocess.Popen[bytes] | None = None
        if self.user is not None:
            account = pwd.getpwnam(self.user)
            os.chown(self._dir, account.pw_uid, account.pw_gid)
        pwfile = self._dir / "pwfile"
        pwfile.write_text(self.password + "\n")
        if self.user is not None:
            os.chown(pwfile, pwd.getpwnam(self.user).pw_uid, -1)
        initdb = [
            str(self.bin / "initdb"),
            "-D", str(self.data),
            "-U", SUPERUSER,
            f"--pwfile={pwfile}",
            "--auth-host=scram-sha-256",
            "--auth-local=scram-sha-256",
            "--encoding=UTF8",
            "--locale=C",
            "--no-sync",
        ]  # fmt: skip
        try:
            subprocess.run(
                initdb,
                check=True,
                capture_output=True,
                user=self.user,
                timeout=120,
            )
        except subprocess.CalledProcessError as exc:
            shutil.rmtree(self._dir, ignore_errors=True)
            raise RuntimeError(f"initdb failed: {exc.stderr.decode(errors='replace')[-2000:]}") from exc
        finally:
            pwfile.unlink(missing_ok=True)

    @property
    def dsn(self) -> str:
        """postgresql:// URL of this server, password included."""
        return f"postgresql://{SUPERUSER}:{self.password}@127.0.0.1:{self.port}/{DATABASE}"

    @property
    def log_path(self) -> Path:
        """The server's log."""
        return self._dir / "postgres.log"

    @property
    def running(self) -> bool:
        """True while the postmaster is alive."""
        return self._proc is not None and self._proc.poll() is None

    def start(self) -> PostgresServer:
        """Start (or restart on the same port) and wait until it accepts connections."""
        if self.running:
            return self
        argv = [
            str(self.bin / "postgres"),
            "-D", str(self.data),
            "-p", str(self.port),
            "-c", "listen_addresses=127.0.0.1",
            "-c", "unix_socket_directories=",
            "-c", "fsync=off",
            "-c", "synchronous_commit=off",
            "-c", "full_page_writes=off",
            "-c", "max_connections=60",
            "-c", "shared_buffers=16MB",
            "-c", "log_min_messages=warning",
        ]  # fmt: skip
        self._proc = procs.spawn(argv, log_path=self.log_path, user=self.user)
        try:
            self._wait_ready(timeout=30)
        except TimeoutError:
            self.stop()
            raise
        return self

    def _wait_ready(self, timeout: float) -> None:
        # The port opens before recovery ends; pg_isready says when sessions are accepted.
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self._proc is not None and self._proc.poll() is not None:
                raise RuntimeError(f"postgres exited: {self.log_path.read_text(errors='replace')[-2000:]}")
            ready = subprocess.run(
                [str(self.bin / "pg_isready"), "-q", "-h", "127.0.0.1", "-p", str(self.port), "-t", "1"],
                check=False,
            )
            if ready.returncode == 0:
                return
            time.sleep(0.05)
        raise TimeoutError(f"PostgreSQL on 127.0.0.1:{self.port} not ready after {timeout:.0f}s")

    def stop(self) -> None:
        """Fast shutdown: clients are disconnected, data is kept for the next ``start``."""
        if self._proc is None:
            return
        if self._proc.poll() is None:
            # SIGINT is PostgreSQL's fast shutdown (timeout(1) in front of it passes it on).
            self._proc.send_signal(signal.SIGINT)
            try:
                self._proc.wait(timeout=20)
            except subprocess.TimeoutExpired:
                self._proc.kill()
                self._proc.wait(timeout=10)
        self._proc = None

    def close(self) -> None:
        """Stop and remove the cluster."""
        self.stop()
        shutil.rmtree(self._dir, ignore_errors=True)

    def __enter__(self) -> PostgresServer:
        return self.start()

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()


@contextlib.contextmanager
def postgres_or_skip() -> Iterator[PostgresServer]:
    """A running server for a test fixture; skips the test where PostgreSQL is not installed."""
    try:
        server = PostgresServer()
    except PostgresUnavailable as exc:
        pytest.skip(str(exc))
    with server:
        yield server
