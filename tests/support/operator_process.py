"""The operator as a local child process against a cluster (as the e2e tests run it).

Its log goes to a file so that tests can wait on log lines and search it (the canary test
checks that no secret value ever reaches it).
"""

from __future__ import annotations

import os
import sys
import tempfile
import time
import urllib.request
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from tests.support.net import free_port
from tests.support.procs import spawn, stop

REPO = Path(__file__).resolve().parents[2]


class OperatorProcess:
    """``with OperatorProcess(kubeconfig, ["ns"]) as op: ...``; ``op.log_text()`` reads its log."""

    def __init__(
        self,
        kubeconfig: str,
        watch_namespaces: Sequence[str],
        *,
        operator_namespace: str | None = None,
        env: Mapping[str, str] | None = None,
        log_dir: Path | None = None,
    ) -> None:
        self.kubeconfig = kubeconfig
        self.watch_namespaces = list(watch_namespaces)
        self.operator_namespace = operator_namespace or self.watch_namespaces[0]
        self.extra_env = dict(env or {})
        self.metrics_port = free_port()
        self._dir = log_dir or Path(tempfile.mkdtemp(prefix="sentient-operator-"))
        self.log_path = self._dir / "operator.log"
        self._proc: Any = None

    def start(self, timeout: float = 60.0) -> OperatorProcess:
        """Start and wait until /healthz answers."""
        env = dict(os.environ)
        env.update(
            {
                "KUBECONFIG": self.kubeconfig,
                "PYTHONPATH": f"{REPO / 'operator'}{os.pathsep}{REPO}",
                "SENTIENT_WATCH_NAMESPACES": ",".join(self.watch_namespaces),
                "SENTIENT_OPERATOR_NAMESPACE": self.operator_namespace,
                "SENTIENT_LEADER_ELECTION": "false",
                "SENTIENT_METRICS_HOST": "127.0.0.1",
                "SENTIENT_METRICS_PORT": str(self.metrics_port),
                "SENTIENT_LOG_FORMAT": "text",
                "SENTIENT_BACKOFF_INITIAL": "0.5",
                "SENTIENT_BACKOFF_MAX": "5",
            }
        )
        env.update(self.extra_env)
        self._proc = spawn(
            [sys.executable, "-m", "sentient_operator"], log_path=self.log_path, env=env, cwd=str(REPO)
        )
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self._proc.poll() is not None:
                raise RuntimeError(f"operator exited ({self._proc.returncode}):\n{self.log_text()[-3000:]}")
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{self.metrics_port}/healthz", timeout=1):
                    return self
            except OSError:
                time.sleep(0.1)
        raise TimeoutError(f"operator not healthy after {timeout:.0f}s:\n{self.log_text()[-3000:]}")

    def stop(self) -> None:
        """SIGTERM (kopf shuts down cleanly), SIGKILL after a grace period."""
        if self._proc is not None:
            stop(self._proc, grace=15.0)
            self._proc = None

    def __enter__(self) -> OperatorProcess:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def log_text(self) -> str:
        """Everything the operator logged so far."""
        try:
            return self.log_path.read_text(errors="replace")
        except FileNotFoundError:
            return ""
