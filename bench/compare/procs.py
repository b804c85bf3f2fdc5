"""Processes of the side-by-side bench: started pinned to one core, measured from /proc, always stopped.

Every process is started in its own session under ``taskset``, so that stopping it
stops everything it started; :class:`Processes` is a context manager that stops
whatever is still running when the bench ends, on success, error or Ctrl-C.
"""

from __future__ import annotations

import contextlib
import ctypes
import os
import signal
import socket
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType

CLOCK_TICKS = os.sysconf("SC_CLK_TCK")
PR_SET_PDEATHSIG = 1


def _die_with_parent() -> None:
    """In the child before exec: the kernel kills it if the bench itself is killed (even with SIGKILL)."""
    ctypes.CDLL(None, use_errno=True).prctl(PR_SET_PDEATHSIG, signal.SIGKILL)


def free_port() -> int:
    """A TCP port free on loopback right now."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def wait_port(port: int, proc: subprocess.Popen[bytes], timeout: float) -> None:
    """Wait until something accepts connections on loopback ``port``; fail early if ``proc`` died."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"process {proc.args!r} exited with {proc.returncode} before listening")
        with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", port), timeout=0.5):
            return
        time.sleep(0.02)
    raise TimeoutError(f"nothing listens on 127.0.0.1:{port} after {timeout:.0f} s")


def tree(pid: int) -> list[int]:
    """``pid`` and all its descendants (threads' children included), from /proc."""
    found = [pid]
    at = 0
    while at < len(found):
        task_dir = Path(f"/proc/{found[at]}/task")
        at += 1
        with contextlib.suppress(OSError):
            for task in task_dir.iterdir():
                with contextlib.suppress(OSError):
                    found += [int(child) for child in (task / "children").read_text().split()]
    return found


def cpu_seconds(pid: int) -> float:
    """User + system CPU seconds of ``pid`` and its descendants (0 for those gone)."""
    total = 0
    for one in tree(pid):
        with contextlib.suppress(OSError):
            fields = Path(f"/proc/{one}/stat").read_text().rsplit(")", 1)[1].split()
            total += int(fields[11]) + int(fields[12])
    return total / CLOCK_TICKS


def memory_mb(pid: int) -> tuple[float, float]:
    """(RSS now, peak RSS) in MB of ``pid`` and its descendants, from /proc/<pid>/status."""
    rss = peak = 0.0
    for one in tree(pid):
        with contextlib.suppress(OSError):
            for line in Path(f"/proc/{one}/status").read_text().splitlines():
                key, _, rest = line.partition(":")
                if key == "VmRSS":
                    rss += float(rest.split()[0]) / 1024.0
                elif key == "VmHWM":
                    peak += float(rest.split()[0]) / 1024.0
    return rss, peak


def wait_quiet(pid: int, timeout: float = 20.0, step: float = 0.2) -> None:
    """Wait until ``pid`` uses under 10% of a core (requests of a cut-off run finished)."""
    deadline = time.monotonic() + timeout
    last = cpu_seconds(pid)
    calm = 0
    while time.monotonic() < deadline and calm < 2:
        time.sleep(step)
        now = cpu_seconds(pid)
        calm = calm + 1 if now - last < 0.1 * step else 0
        last = now


@dataclass
class Started:
    """One process started by the bench."""

    name: str
    proc: subprocess.Popen[bytes]
    started_at: float
    log: Path

    @property
    def pid(self) -> int:
        """Process id of the program itself (``taskset`` execs it)."""
        return self.proc.pid


class Processes:
    """Starts processes pinned to a core and stops every one of them on exit."""

    def __init__(self, log_dir: Path) -> None:
        self.log_dir = log_dir
        self.running: list[Started] = []

    def start(self, name: str, args: list[str], cpu: int | str, env: dict[str, str] | None = None) -> Started:
        """Start ``args`` pinned to ``cpu`` (a core, or a taskset list such as ``0,1``), output to a
        log file (an unread pipe would block it)."""
        log = self.log_dir / f"{name}.log"
        started_at = time.monotonic()
        with log.open("ab") as out:
            proc = subprocess.Popen(
                ["taskset", "-c", str(cpu), *args],
                env=env,
                stdout=out,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
                start_new_session=True,
                preexec_fn=_die_with_parent,  # safe: the bench runs no threads
            )
        started = Started(name, proc, started_at, log)
        self.running.append(started)
        return started

    def stop(self, started: Started, grace: float = 15.0) -> None:
        """SIGTERM the process group, SIGKILL it after ``grace`` seconds."""
        if started in self.running:
            self.running.remove(started)
        if started.proc.poll() is not None:
            return
        with contextlib.suppress(ProcessLookupError):
            os.killpg(started.proc.pid, signal.SIGTERM)
        try:
            started.proc.wait(timeout=grace)
        except subprocess.TimeoutExpired:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(started.proc.pid, signal.SIGKILL)
            started.proc.wait(timeout=10)

    def __enter__(self) -> Processes:
        return self

    def __exit__(
        self, kind: type[BaseException] | None, error: BaseException | None, trace: TracebackType | None
    ) -> None:
        for started in reversed(list(self.running)):
            self.stop(started)
