"""The pod supervisor: every agent on the local control plane answers, as on a real cluster.

kwok fakes the pods; ``e2e.pod_supervisor.PodSupervisor`` backs each agent's pods with a runtime
process and points kubectl's port-forwards at it. Tested: two agents the user applies (not the
demo's) answer through ``kubectl port-forward svc/NAME`` and ``sentient chat ns/name``; a runtime
that dies is started again; scaling an agent to zero stops its runtime.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest

from agent_runtime.testing import run_fake
from e2e.agents import CALLER_KEY, PROVIDER_KEY, agent, callers, provider, wait_ready
from e2e.cluster import Cluster
from e2e.operator_proc import running_operator
from e2e.pod_supervisor import PodSupervisor
from e2e.portforward import http_through_port_forward
from e2e.resources import apply

REPO = Path(__file__).resolve().parents[1]


@pytest.fixture(autouse=True)
def _kwok_only(cluster: Cluster) -> None:
    # On kind the pods really run; the supervisor is the local control plane's kubelet stand-in.
    if cluster.kubectl("get", "crd", "portforwards.kwok.x-k8s.io", check=False).returncode != 0:
        pytest.skip("no kwok PortForward CRD: not the local control plane")


def _chat(cluster: Cluster, target: str, prompt: str) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, **cluster.env, "PYTHONPATH": f"{REPO / 'operator'}{os.pathsep}{REPO}"}
    return subprocess.run(
        [
            sys.executable,
            "-m",
            "sentient_operator.cli",
            "chat",
            target,
            "-p",
            prompt,
            "--api-key",
            CALLER_KEY,
        ],
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )


def test_every_agent_gets_a_runtime_reachable_by_name(
    cluster: Cluster, crds: list[str], k8s: Any, namespace: str, tmp_path: Path
) -> None:
    events: list[str] = []
    with (
        run_fake("openai", api_key=PROVIDER_KEY) as upstream,
        running_operator(cluster, namespace),
        PodSupervisor(k8s, tmp_path / "pods", interval=0.5, on_event=events.append) as supervisor,
    ):
        apply(
            cluster,
            *provider(namespace, upstream.endpoint),
            callers(namespace, "first"),
            callers(namespace, "second"),
            agent(namespace, "first"),
            agent(namespace, "second"),
        )
        for name in ("first", "second"):
            wait_ready(cluster, namespace, name)
            supervisor.wait_runtime(namespace, name)

        # Through the Service, as on a real cluster: kubectl -> apiserver -> kwok -> the runtime.
        status, _ = http_through_port_forward(cluster, namespace, "svc/second", 80, "/ready")
        assert status == 200
        for name in ("first", "second"):
            done = _chat(cluster, f"{namespace}/{name}", f"hello {name}")
            assert done.returncode == 0, done.stderr
            assert f"Echo: hello {name}" in done.stdout, done.stdout + done.stderr

        # A runtime that dies is started again (with a back-off), like a container restart.
        first = supervisor.runtime(namespace, "first")
        assert first is not None and first.process is not None
        old_pid = first.process.pid
        os.kill(old_pid, signal.SIGKILL)
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            again = supervisor.runtime(namespace, "first")
            if again is not None and again.process is not None and again.process.pid != old_pid:
                break
            time.sleep(0.2)
        else:
            pytest.fail(f"the killed runtime was not started again: {events}")
        assert any("runtime exited" in e for e in events), events

        # Scaled to zero: no Running pod left, the runtime is stopped.
        cluster.kubectl("scale", "sentientagent/second", "-n", namespace, "--replicas=0")
        deadline = time.monotonic() + 60
        while (namespace, "second") in supervisor.agents:
            assert time.monotonic() < deadline, f"runtime of a scaled-down agent still running: {events}"
            time.sleep(0.2)
        assert supervisor.runtime(namespace, "first") is not None
    # Leaving the supervisor stops every runtime.
    assert not supervisor.agents
