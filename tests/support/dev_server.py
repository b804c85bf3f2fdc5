"""A ``sentient dev`` started as a subprocess exactly as a user starts it, on a 127.0.0.1 port.

Shared by the dev command's tests and the dev dashboard's (API and browser) tests; every
server started through :func:`dev_servers` is stopped (SIGTERM) at the end of the test, and
its runtime workers must be gone with it.
"""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path

from agent_runtime.client import SyncSentientClient
from tests.support.net import free_port

REPO = Path(__file__).resolve().parents[2]


class Dev:
    """A running ``sentient dev`` with its combined output in a file."""

    def __init__(self, args: list[str], cwd: Path, log: Path) -> None:
        self.port = free_port()
        self.log = log
        env = {
            **os.environ,
            "PYTHONPATH": f"{REPO / 'operator'}{os.pathsep}{REPO}",
            "OPENAI_API_KEY": "",
            "ANTHROPIC_API_KEY": "",
        }
        with log.open("wb") as out:
            self.proc = subprocess.Popen(
                [sys.executable, "-m", "sentient_operator.cli", "dev", *args, "--port", str(self.port)],
                cwd=cwd,
                env=env,
                stdout=out,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
            )

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def output(self) -> str:
        return self.log.read_text(errors="replace")

    def wait_for(self, pattern: str, timeout: float = 60.0) -> re.Match[str]:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            match = re.search(pattern, self.output())
            if match:
                return match
            if self.proc.poll() is not None:
                break
            time.sleep(0.05)
        raise AssertionError(f"no {pattern!r} in the output of sentient dev:\n{self.output()}")

    def ask(self, prompt: str) -> str:
        with SyncSentientClient(self.url, timeout=10) as client:
            result = client.ask(prompt)
        assert result.error is None, result.error
        return result.text

    def worker_pids(self) -> list[int]:
        done = subprocess.run(
            ["ps", "-o", "pid=", "--ppid", str(self.proc.pid)], capture_output=True, text=True, check=False
        )
        return [int(p) for p in done.stdout.split()]

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout=20)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(timeout=5)


RunDev = Callable[[list[str], Path], Dev]


def dev_servers(tmp_path: Path) -> Iterator[RunDev]:
    """The body of a ``run_dev`` fixture: start servers on demand, stop them all afterwards."""
    started: list[Dev] = []

    def start(args: list[str], cwd: Path) -> Dev:
        dev = Dev(args, cwd, tmp_path / f"dev-{len(started)}.log")
        started.append(dev)
        return dev

    yield start
    for dev in started:
        workers = dev.worker_pids()
        dev.stop()
        for pid in workers:  # the runtime workers went with it
            assert not Path(f"/proc/{pid}").exists() or zombie(pid), f"worker {pid} outlived sentient dev"


def zombie(pid: int) -> bool:
    """True when ``pid`` is gone or a zombie."""
    try:
        return Path(f"/proc/{pid}/stat").read_text().split()[2] == "Z"
    except OSError:
        return True


def edit(path: Path, text: str) -> None:
    """Rewrite ``path`` so that its mtime moves on (the watcher sees the change)."""
    # Same-size rewrites inside one mtime tick still change the content; make sure mtime moves on.
    before = path.stat().st_mtime_ns
    path.write_text(text)
    if path.stat().st_mtime_ns == before:
        os.utime(path, ns=(before + 1_000_000, before + 1_000_000))
