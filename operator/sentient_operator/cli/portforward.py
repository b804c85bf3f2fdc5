"""``kubectl port-forward`` to an agent's Service as a context manager with a free local port."""

from __future__ import annotations

import json
import os
import queue
import re
import shutil
import subprocess
import threading
import time
from types import TracebackType
from typing import Any

from sentient_operator.cli.errors import CliError
from sentient_operator.cli.progress import Progress

_FORWARDING = re.compile(r"^Forwarding from 127\.0\.0\.1:(\d+) -> \d+")


def parse_forwarding_line(line: str) -> int | None:
    """The local port of a ``Forwarding from 127.0.0.1:PORT -> REMOTE`` line, else None."""
    match = _FORWARDING.match(line.strip())
    return int(match.group(1)) if match else None


def kubectl_binary() -> str:
    """``$KUBECTL`` or the kubectl on PATH."""
    found = os.environ.get("KUBECTL") or shutil.which("kubectl")
    if not found:
        raise CliError("kubectl not found on PATH (needed to port-forward); or give the agent's URL")
    return found


def _kubectl_args(context: str | None, namespace: str) -> list[str]:
    args = [kubectl_binary()]
    if context:
        args += ["--context", context]
    return [*args, "--namespace", namespace]


def service_port(service: dict[str, Any]) -> int:
    """The Service port to forward to: the one named ``http`` (the agent API), else the first."""
    ports = (service.get("spec") or {}).get("ports") or []
    if not ports:
        raise CliError(f"Service {service.get('metadata', {}).get('name')} has no ports")
    chosen = next((p for p in ports if p.get("name") == "http"), ports[0])
    return int(chosen["port"])


class PortForward:
    """Forwards a free 127.0.0.1 port to ``svc/NAME`` through the API server; ``url`` once entered.

    kubectl chooses the local port itself (``:REMOTE``), which avoids racing
    another process for a port picked in advance; the port is read from the
    line kubectl prints once the listener is up.
    """

    def __init__(
        self, namespace: str, name: str, *, context: str | None = None, timeout: float = 30.0
    ) -> None:
        self.namespace = namespace
        self.name = name
        self.context = context
        self.timeout = timeout
        self.local_port: int | None = None
        self._proc: subprocess.Popen[str] | None = None
        self._stderr: list[str] = []

    @property
    def url(self) -> str:
        """``http://127.0.0.1:PORT`` of the forwarded Service."""
        if self.local_port is None:
            raise RuntimeError("the port-forward is not running")
        return f"http://127.0.0.1:{self.local_port}"

    def _service(self) -> dict[str, Any]:
        args = [*_kubectl_args(self.context, self.namespace), "get", "service", self.name, "-o", "json"]
        try:
            done = subprocess.run(args, capture_output=True, text=True, timeout=self.timeout, check=False)
        except subprocess.TimeoutExpired as exc:
            raise CliError(f"kubectl get service {self.namespace}/{self.name} timed out") from exc
        if done.returncode != 0:
            reason = (done.stderr.strip().splitlines() or ["kubectl failed"])[-1]
            if "(NotFound)" in reason:
                raise CliError(self._not_found())
            raise CliError(f"cannot read Service {self.namespace}/{self.name}: {reason}")
        return dict(json.loads(done.stdout))

    def _not_found(self) -> str:
        """Why there is no Service, in the user's terms: no such agent, or an agent not rendered yet."""
        where = f"{self.namespace}/{self.name}"
        args = [*_kubectl_args(self.context, self.namespace), "get", "sentientagent", self.name, "-o", "name"]
        try:
            done = subprocess.run(args, capture_output=True, text=True, timeout=self.timeout, check=False)
            exists = done.returncode == 0
        except subprocess.TimeoutExpired:
            exists = False
        if exists:
            return f"agent {where} has no Service yet (see `sentient status -n {self.namespace}`)"
        return f"no agent {where} (`sentient status -n {self.namespace}` lists the agents there)"

    def start(self) -> PortForward:
        """Start kubectl and wait until it listens (progress on stderr); raises CliError on failure."""
        with Progress(f"port-forwarding to svc/{self.name} in {self.namespace}"):
            remote = service_port(self._service())
            args = [
                *_kubectl_args(self.context, self.namespace),
                "port-forward",
                f"--pod-running-timeout={max(1, int(self.timeout))}s",
                "--address",
                "127.0.0.1",
                f"svc/{self.name}",
                f":{remote}",
            ]
            self._proc = subprocess.Popen(
                args, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, bufsize=1
            )
            lines: queue.Queue[str | None] = queue.Queue()
            threading.Thread(target=self._pump_stdout, args=(lines,), daemon=True).start()
            threading.Thread(target=self._pump_stderr, daemon=True).start()
            # kubectl gives up on its own after --pod-running-timeout and says why; wait a bit longer.
            deadline = time.monotonic() + self.timeout + 10
            while self.local_port is None:
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    self.stop()
                    raise CliError(
                        f"port-forward to svc/{self.name} did not start within {self.timeout:.0f}s"
                    )
                try:
                    line = lines.get(timeout=min(remaining, 0.2))
                except queue.Empty:
                    continue
                if line is None:
                    code = self._proc.wait()
                    time.sleep(0.05)  # let the stderr reader catch kubectl's last words
                    reason = self._stderr[-1] if self._stderr else f"kubectl exited with {code}"
                    self._proc = None
                    raise CliError(f"port-forward to svc/{self.name} failed: {reason}")
                self.local_port = parse_forwarding_line(line)
        return self

    def _pump_stdout(self, lines: queue.Queue[str | None]) -> None:
        proc = self._proc
        assert proc is not None and proc.stdout is not None
        for line in proc.stdout:
            lines.put(line)
        lines.put(None)

    def _pump_stderr(self) -> None:
        proc = self._proc
        assert proc is not None and proc.stderr is not None
        for line in proc.stderr:
            if line.strip():
                self._stderr.append(line.strip())

    @property
    def last_error(self) -> str | None:
        """kubectl's last complaint (e.g. a broken connection to the pod), if any."""
        return self._stderr[-1] if self._stderr else None

    def stop(self) -> None:
        """Stop kubectl (SIGTERM, then SIGKILL after 5 s)."""
        proc, self._proc = self._proc, None
        self.local_port = None
        if proc is None or proc.poll() is not None:
            return
        proc.terminate()
        try:
            proc.wait(timeout=5)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(timeout=5)

    def __enter__(self) -> PortForward:
        return self.start()

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.stop()
