"""``make demo ARGS=--keep`` under signals: every way it ends leaves nothing behind.

SIGTERM and SIGHUP clean up like Ctrl-C (the operator, the runtimes, the fake upstream and the
control plane stop, their files go); SIGKILL cannot be handled, so every child is started with a
parent-death signal and dies with the demo. The next demo must never find a leaked upstream on
its port.
"""

from __future__ import annotations

import os
import re
import signal
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from e2e.cluster import Cluster

REPO = Path(__file__).resolve().parents[1]
UPSTREAM_PORT = 8900


def _children(pid: int) -> set[int]:
    """Every live descendant of ``pid`` (from /proc)."""
    parents: dict[int, int] = {}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
        except OSError:
            continue
        # The command name may hold spaces and parentheses; the fields after the last ')' do not.
        parents[int(entry.name)] = int(stat.rsplit(")", 1)[1].split()[1])
    found: set[int] = set()
    frontier = {pid}
    while frontier:
        frontier = {child for child, parent in parents.items() if parent in frontier} - found
        found |= frontier
    return found


def _alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except OSError:
        return False
    return state != "Z"


def _listening(port: int) -> bool:
    with socket.socket() as sock:
        return sock.connect_ex(("127.0.0.1", port)) == 0


@pytest.mark.parametrize("signum", [signal.SIGTERM, signal.SIGHUP, signal.SIGKILL], ids=lambda s: s.name)
def test_kept_demo_leaves_nothing_behind(cluster: Cluster, signum: signal.Signals) -> None:
    if cluster.local is None:
        pytest.skip("the demo starts its own local control plane; this run uses an external cluster")
    if _listening(UPSTREAM_PORT):
        pytest.skip(f"127.0.0.1:{UPSTREAM_PORT} is taken by something else on this machine")
    env = {k: v for k, v in os.environ.items() if k != "E2E_KUBECONFIG"}
    env["PYTHONPATH"] = f"{REPO / 'operator'}{os.pathsep}{REPO}"
    demo = subprocess.Popen(
        [sys.executable, "-m", "e2e.demo", "--keep"],
        cwd=str(REPO),
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        start_new_session=True,  # the signal goes to the demo alone, as `kill PID` would send it
    )
    lines: list[str] = []
    kept = threading.Event()

    def read() -> None:
        assert demo.stdout is not None
        for line in demo.stdout:
            lines.append(line.rstrip("\n"))
            if "Everything keeps running" in line:
                kept.set()

    reader = threading.Thread(target=read, daemon=True)
    reader.start()
    try:
        assert kept.wait(180), "\n".join(lines[-30:])
        time.sleep(1)
        runtime_port = int(
            re.findall(r"agent runtime ready at http://127\.0\.0\.1:(\d+)", "\n".join(lines))[0]
        )
        children = _children(demo.pid)
        assert children and _listening(UPSTREAM_PORT) and _listening(runtime_port)
        hint = "\n".join(lines[lines.index(next(x for x in lines if "Everything keeps running" in x)) :])
        # A block to paste: no assumption about the working directory or PATH.
        assert "export KUBECONFIG=" in hint and "export PATH=" in hint and "export PYTHONPATH=" in hint

        demo.send_signal(signum)
        demo.wait(timeout=90)
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline and any(_alive(p) for p in children):
            time.sleep(0.2)
        left = sorted(p for p in children if _alive(p))
        assert not left, f"processes left after {signum.name}: {left}\n" + "\n".join(lines[-20:])
        assert not _listening(UPSTREAM_PORT) and not _listening(runtime_port)
        if signum != signal.SIGKILL:
            assert demo.returncode == 0, "\n".join(lines[-20:])
            assert any("stopping: the control plane" in x for x in lines), "\n".join(lines[-20:])
    finally:
        if demo.poll() is None:
            demo.kill()
            demo.wait(30)
        for pid in _children(demo.pid):
            os.kill(pid, signal.SIGKILL)
