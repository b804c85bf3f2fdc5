"""Run the operator as a real subprocess against the test cluster, and wait on its log lines.

``python -m sentient_operator`` is started with the cluster's KUBECONFIG, JSON logs captured
line by line. Tests wait for log lines or cluster state, never for fixed sleeps. Stopping
deletes the test's agents first and waits until they and their children are gone (the operator
uses no finalizers, but a test must never leave objects behind that a later operator would
pick up), then sends SIGTERM.

Each test operator watches only its own namespaces (``SENTIENT_WATCH_NAMESPACES``) and keeps
its Lease and fingerprint key there, so operators of concurrent test sessions on a shared
cluster never act on each other's objects.

This is the one operator-process helper of the tests, the e2e harness and the benches:
``with OperatorProcess(kubeconfig, ["ns"], leader_election=False) as op:`` starts it and waits
until /healthz answers; :func:`running_operator` also waits for leadership and kopf's start-up.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import sys
import threading
import time
import urllib.request
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

from e2e.agent_pod import free_port, set_parent_death_signal
from tests.support.waiting import wait_for

REPO = Path(__file__).resolve().parent.parent


class OperatorProcess:
    """One ``python -m sentient_operator`` process."""

    def __init__(
        self,
        kubeconfig: str,
        namespaces: list[str],
        *,
        identity: str = "op-1",
        lease_namespace: str | None = None,
        env: dict[str, str] | None = None,
        log_path: Path | None = None,
        python: str = sys.executable,
        leader_election: bool = True,
        log_format: str = "json",
    ) -> None:
        self.kubeconfig = kubeconfig
        self.namespaces = namespaces
        self.identity = identity
        self.lease_namespace = lease_namespace or namespaces[0]
        self.metrics_port = free_port()
        self.extra_env = dict(env or {})
        self.log_path = log_path
        self.python = python
        self.leader_election = leader_election
        self.log_format = log_format
        self.process: subprocess.Popen[str] | None = None
        self.lines: list[str] = []
        self._cond = threading.Condition()
        self._reader: threading.Thread | None = None

    def start(self) -> OperatorProcess:
        """Start the process and a thread collecting its output."""
        env = dict(os.environ)
        env.update(
            {
                "KUBECONFIG": self.kubeconfig,
                "PYTHONPATH": f"{REPO / 'operator'}{os.pathsep}{REPO}",
                "SENTIENT_WATCH_NAMESPACES": ",".join(self.namespaces),
                "SENTIENT_OPERATOR_NAMESPACE": self.lease_namespace,
                "SENTIENT_IDENTITY": self.identity,
                "SENTIENT_METRICS_PORT": str(self.metrics_port),
                "SENTIENT_METRICS_HOST": "127.0.0.1",
                "SENTIENT_LOG_FORMAT": self.log_format,
                "SENTIENT_LEADER_ELECTION": "true" if self.leader_election else "false",
                "SENTIENT_LEASE_DURATION": "6",
                "SENTIENT_LEASE_RENEW_INTERVAL": "2",
                "SENTIENT_BACKOFF_INITIAL": "0.5",
                "SENTIENT_BACKOFF_MAX": "5",
                "SENTIENT_RUNTIME_IMAGE": "sentient-agent-runtime:e2e",
            }
        )
        env.update(self.extra_env)
        self.process = subprocess.Popen(
            [self.python, "-m", "sentient_operator"],
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
            bufsize=1,
            cwd=str(REPO),
            # Dies with the thread that started it (tests, the demo: the main thread), so a
            # harness killed outright leaves no operator behind acting on the cluster.
            preexec_fn=set_parent_death_signal,
        )
        self._reader = threading.Thread(target=self._read, name=f"operator-{self.identity}", daemon=True)
        self._reader.start()
        return self

    def wait_healthy(self, timeout: float = 60.0) -> OperatorProcess:
        """Until /healthz answers (the process serves it from its first second, leader or not)."""
        deadline = time.monotonic() + timeout
        while True:
            if self.process is not None and self.process.poll() is not None:
                self.terminate()
                raise RuntimeError(f"operator exited ({self.process.returncode}):\n{self.tail()}")
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{self.metrics_port}/healthz", timeout=1):
                    return self
            except OSError:
                if time.monotonic() > deadline:
                    raise TimeoutError(f"operator not healthy after {timeout:.0f}s:\n{self.tail()}") from None
                time.sleep(0.1)

    def __enter__(self) -> OperatorProcess:
        try:
            return self.start().wait_healthy()
        except BaseException:
            self.terminate()
            raise

    def __exit__(self, *exc: object) -> None:
        self.terminate()

    def log_text(self) -> str:
        """Everything the operator logged so far."""
        with self._cond:
            return "\n".join(self.lines)

    def _read(self) -> None:
        assert self.process is not None and self.process.stdout is not None
        sink = self.log_path.open("a") if self.log_path else None
        try:
            for line in self.process.stdout:
                if sink:
                    sink.write(line)
                    sink.flush()
                with self._cond:
                    self.lines.append(line.rstrip("\n"))
                    self._cond.notify_all()
        finally:
            if sink:
                sink.close()
            with self._cond:
                self._cond.notify_all()

    def messages(self) -> list[str]:
        """The ``message`` of every JSON log line so far (raw text for other lines)."""
        out = []
        for line in list(self.lines):
            try:
                out.append(str(json.loads(line).get("message", "")))
            except ValueError:
                out.append(line)
        return out

    def wait_for_log(self, needle: str, timeout: float = 60.0, start: int = 0) -> str:
        """Until a log line at index >= ``start`` contains ``needle``; returns it."""
        deadline = time.monotonic() + timeout
        with self._cond:
            while True:
                for line in self.lines[start:]:
                    if needle in line:
                        return line
                if self.process is not None and self.process.poll() is not None and not self._reader_alive():
                    raise RuntimeError(
                        f"operator exited ({self.process.returncode}) before {needle!r}:\n{self.tail()}"
                    )
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    raise TimeoutError(f"no log line with {needle!r} in {timeout}s:\n{self.tail()}")
                self._cond.wait(timeout=min(remaining, 1.0))

    def _reader_alive(self) -> bool:
        return self._reader is not None and self._reader.is_alive()

    def tail(self, lines: int = 40) -> str:
        """The last log lines."""
        return "\n".join(self.lines[-lines:])

    def metrics(self) -> str:
        """The operator's /metrics text."""
        with urllib.request.urlopen(f"http://127.0.0.1:{self.metrics_port}/metrics", timeout=5) as resp:
            return str(resp.read().decode())

    def metric(self, name: str, **labels: str) -> float:
        """Sum of one metric's samples matching ``labels`` (0 when absent)."""
        total = 0.0
        for line in self.metrics().splitlines():
            if not line.startswith(name) or line.startswith("#"):
                continue
            head, _, value = line.rpartition(" ")
            if head.split("{")[0] != name:
                continue
            if all(f'{k}="{v}"' in head for k, v in labels.items()):
                total += float(value)
        return total

    def kill(self) -> None:
        """SIGKILL: a crash, no clean-up, no Lease release."""
        if self.process is not None and self.process.poll() is None:
            self.process.kill()
            self.process.wait()

    def terminate(self, timeout: float = 30.0) -> int | None:
        """SIGTERM and wait (the operator releases its Lease)."""
        if self.process is None:
            return None
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(timeout=timeout)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        if self._reader is not None:
            self._reader.join(timeout=5)
        return self.process.returncode

    @property
    def alive(self) -> bool:
        """Whether the process runs."""
        return self.process is not None and self.process.poll() is None


def delete_agents_and_wait(kubectl: Callable[..., Any], namespace: str, timeout: float = 60.0) -> None:
    """Delete every SentientAgent of ``namespace`` and wait until they and their children are gone."""
    kubectl("delete", "sentientagents", "--all", "-n", namespace, "--wait=true", "--timeout=60s", check=False)

    def gone() -> bool:
        out = kubectl(
            "get",
            "deployments,services,configmaps,secrets",
            "-n",
            namespace,
            "-l",
            "app.kubernetes.io/managed-by=sentient-operator,app.kubernetes.io/component=agent",
            "-o",
            "name",
            check=False,
        ).stdout
        return not out.strip()

    wait_for(gone, timeout=timeout, what=f"children of agents in {namespace} to be garbage-collected")


@contextlib.contextmanager
def running_operator(
    cluster: Any,
    namespace: str,
    *,
    extra_namespaces: list[str] | None = None,
    delete_agents: bool = True,
    **kwargs: Any,
) -> Iterator[OperatorProcess]:
    """An operator for ``namespace`` (and ``extra_namespaces``), started and leading.

    On exit the agents of those namespaces are deleted and their children awaited before the
    operator stops, unless ``delete_agents`` is False (a throwaway cluster goes away anyway).
    """
    namespaces = [namespace, *(extra_namespaces or [])]
    op = OperatorProcess(cluster.kubeconfig, namespaces, **kwargs).start()
    try:
        op.wait_for_log("acquired leadership", timeout=60)
        op.wait_for_log("_startup' succeeded", timeout=60)
        yield op
    finally:
        try:
            if op.alive and delete_agents:
                for ns in namespaces:
                    delete_agents_and_wait(cluster.kubectl, ns)
        finally:
            op.terminate()
