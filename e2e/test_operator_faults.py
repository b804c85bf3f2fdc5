"""Leader election when the apiserver is unreachable: the operator waits it out and never acts
without a valid Lease.

The operator reaches the local control plane through a TCP proxy (tests/support/tcp_proxy.py)
that can refuse connections (an apiserver that is down or not up yet) or freeze them (one that
stops answering). The test reads the Lease directly from the apiserver, past the proxy.
"""

from __future__ import annotations

import json
import time
import urllib.request
from datetime import datetime
from pathlib import Path
from typing import Any
from urllib.parse import urlparse

import yaml

from e2e.agents import agent, callers, keyless_provider
from e2e.operator_proc import OperatorProcess, delete_agents_and_wait
from e2e.resources import apply, get
from tests.support.tcp_proxy import TCPProxy
from tests.support.waiting import wait_for

LEASE = "sentient-operator"


def _upstream(kubeconfig: str) -> tuple[str, int]:
    cfg = yaml.safe_load(Path(kubeconfig).read_text())
    server = urlparse(cfg["clusters"][0]["cluster"]["server"])
    return server.hostname or "127.0.0.1", int(server.port or 443)


def _proxied(kubeconfig: str, port: int, path: Path) -> str:
    """A copy of ``kubeconfig`` whose server is the proxy (the apiserver's certificate names 127.0.0.1)."""
    cfg = yaml.safe_load(Path(kubeconfig).read_text())
    for cluster in cfg["clusters"]:
        cluster["cluster"]["server"] = f"https://127.0.0.1:{port}"
    path.write_text(yaml.safe_dump(cfg))
    return str(path)


def _role(op: OperatorProcess) -> str:
    with urllib.request.urlopen(f"http://127.0.0.1:{op.metrics_port}/healthz", timeout=5) as resp:
        return str(json.loads(resp.read())["role"])


def _lease_expiry(cluster: Any, namespace: str) -> float:
    """When the Lease expires (Unix time), from its renewTime and duration."""
    lease = get(cluster, "lease", LEASE, namespace)
    assert lease is not None
    spec = lease["spec"]
    renewed = datetime.fromisoformat(spec["renewTime"].replace("Z", "+00:00")).timestamp()
    return renewed + float(spec["leaseDurationSeconds"])


def test_started_before_the_apiserver_answers_it_waits_and_then_leads(
    cluster: Any, crds: list[str], namespace: str, tmp_path: Path
) -> None:
    with TCPProxy(_upstream(str(cluster.kubeconfig))) as proxy:
        kubeconfig = _proxied(str(cluster.kubeconfig), proxy.port, tmp_path / "kubeconfig")
        proxy.refuse()
        op = OperatorProcess(kubeconfig, [namespace], identity="early").start()
        try:
            # Refused, then refused again after a longer wait: backing off, not crashing.
            first = op.wait_for_log("trying again in", timeout=30)
            op.wait_for_log("trying again in", timeout=30, start=op.lines.index(first) + 1)
            assert op.alive, op.tail()
            assert _role(op) == "standby"
            proxy.accept()
            op.wait_for_log("acquired leadership", timeout=60)
            op.wait_for_log("_startup' succeeded", timeout=60)
            apply(cluster, keyless_provider(namespace), callers(namespace), agent(namespace))
            wait_for(lambda: get(cluster, "configmap", "helper-config", namespace), "the agent's ConfigMap")
        finally:
            if op.alive:
                delete_agents_and_wait(cluster.kubectl, namespace)
            assert op.terminate() == 0, op.tail()


def test_leader_steps_down_before_its_lease_expires_and_campaigns_again(
    cluster: Any, crds: list[str], namespace: str, tmp_path: Path
) -> None:
    with TCPProxy(_upstream(str(cluster.kubeconfig))) as proxy:
        kubeconfig = _proxied(str(cluster.kubeconfig), proxy.port, tmp_path / "kubeconfig")
        op = OperatorProcess(kubeconfig, [namespace], identity="leader").start()
        try:
            op.wait_for_log("acquired leadership", timeout=60)
            op.wait_for_log("_startup' succeeded", timeout=60)
            for fault, recover in ((proxy.freeze, proxy.thaw), (proxy.refuse, proxy.accept)):
                mark = len(op.lines)
                fault()  # the apiserver stops answering, then is down
                op.wait_for_log("lost leadership", timeout=30, start=mark)
                # It stopped acting while its Lease was still valid: nobody else could hold it yet.
                assert time.time() < _lease_expiry(cluster, namespace)
                op.wait_for_log("stepped down", timeout=60, start=mark)
                assert op.alive and _role(op) == "standby", op.tail()
                recover()
                proxy.cut()  # connections held through the fault go; fresh ones work
                op.wait_for_log("acquired leadership", timeout=60, start=mark)
                op.wait_for_log("_startup' succeeded", timeout=60, start=mark)
                assert _role(op) == "leader"
            # A new term acts: an agent created now is reconciled.
            apply(cluster, keyless_provider(namespace), callers(namespace), agent(namespace))
            wait_for(lambda: get(cluster, "configmap", "helper-config", namespace), "the agent's ConfigMap")
        finally:
            proxy.thaw()
            proxy.accept()
            if op.alive:
                delete_agents_and_wait(cluster.kubectl, namespace)
            assert op.terminate() == 0, op.tail()
