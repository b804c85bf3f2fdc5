"""Operator process behaviour: crash and restart, two replicas with one leader, CRDs appearing
later, credential rotation with HotReload vs RollingRestart."""

from __future__ import annotations

import base64
import json
from pathlib import Path
from typing import Any

import pytest

from agent_runtime.testing import run_fake
from e2e.agents import PROVIDER_KEY, agent, callers, provider, wait_ready
from e2e.operator_proc import OperatorProcess, delete_agents_and_wait, running_operator
from e2e.resources import apply, condition, get
from tests.support.waiting import wait_for

SERVICE_MONITOR_CRD: dict[str, Any] = {
    "apiVersion": "apiextensions.k8s.io/v1",
    "kind": "CustomResourceDefinition",
    "metadata": {"name": "servicemonitors.monitoring.coreos.com"},
    "spec": {
        "group": "monitoring.coreos.com",
        "names": {
            "kind": "ServiceMonitor",
            "listKind": "ServiceMonitorList",
            "plural": "servicemonitors",
            "singular": "servicemonitor",
        },
        "scope": "Namespaced",
        "versions": [
            {
                "name": "v1",
                "served": True,
                "storage": True,
                "schema": {
                    "openAPIV3Schema": {
                        "type": "object",
                        "properties": {
                            "spec": {"type": "object", "x-kubernetes-preserve-unknown-fields": True}
                        },
                    }
                },
            }
        ],
    },
}


@pytest.fixture
def fake_upstream() -> Any:
    with run_fake("openai", api_key=PROVIDER_KEY) as fake:
        yield fake


def replica_sets(cluster: Any, namespace: str, name: str) -> list[dict[str, Any]]:
    out = cluster.kubectl(
        "get", "rs", "-n", namespace, "-l", f"app.kubernetes.io/instance={name}", "-o", "json"
    )
    items: list[dict[str, Any]] = json.loads(out.stdout)["items"]
    return items


def test_killed_mid_reconcile_restart_converges(
    cluster: Any, crds: list[str], namespace: str, fake_upstream: Any, tmp_path: Path
) -> None:
    names = [f"agent-{i}" for i in range(6)]
    apply(cluster, *provider(namespace, fake_upstream.endpoint))
    apply(cluster, *[callers(namespace, n) for n in names])
    first = OperatorProcess(
        cluster.kubeconfig, [namespace], identity="op-crash", log_path=tmp_path / "op1.log"
    ).start()
    second: OperatorProcess | None = None
    try:
        first.wait_for_log("_startup' succeeded")
        apply(cluster, *[agent(namespace, n) for n in names])
        # Kill it as soon as it has started writing children: some agents are done, some not.
        wait_for(
            lambda: get(cluster, "deployment", names[0], namespace), timeout=60, what="a first Deployment"
        )
        first.kill()
        second = OperatorProcess(
            cluster.kubeconfig, [namespace], identity="op-restarted", log_path=tmp_path / "op2.log"
        ).start()
        second.wait_for_log("acquired leadership", timeout=60)
        for n in names:
            wait_ready(cluster, namespace, n)
        for n in names:
            assert len(replica_sets(cluster, namespace, n)) == 1, f"{n}: duplicate rollout"
            obj = get(cluster, "sentientagent", n, namespace)
            assert condition(obj, "Ready")["status"] == "True"
        deployments = json.loads(cluster.kubectl("get", "deployments", "-n", namespace, "-o", "json").stdout)[
            "items"
        ]
        assert sorted(d["metadata"]["name"] for d in deployments) == sorted(names)
        delete_agents_and_wait(cluster.kubectl, namespace)
    finally:
        first.kill()
        if second is not None:
            second.terminate()


def test_two_operators_one_acts_other_takes_over(
    cluster: Any, crds: list[str], namespace: str, fake_upstream: Any, tmp_path: Path
) -> None:
    a = OperatorProcess(cluster.kubeconfig, [namespace], identity="op-a", log_path=tmp_path / "a.log").start()
    b: OperatorProcess | None = None
    try:
        a.wait_for_log("acquired leadership")
        a.wait_for_log("_startup' succeeded")
        b = OperatorProcess(
            cluster.kubeconfig, [namespace], identity="op-b", log_path=tmp_path / "b.log"
        ).start()
        b.wait_for_log("standing by")
        apply(
            cluster,
            *provider(namespace, fake_upstream.endpoint),
            callers(namespace),
            agent(namespace, "first"),
        )
        apply(cluster, callers(namespace, "first"))
        wait_ready(cluster, namespace, "first")
        assert a.metric("sentient_operator_api_writes_total") > 0
        assert b.metric("sentient_operator_api_writes_total") == 0
        assert b.metric("sentient_operator_reconciles_total") == 0
        assert b.metric("sentient_operator_leader") == 0

        a.kill()  # a crash: no release, the standby waits for the Lease to expire
        b.wait_for_log("acquired leadership", timeout=60)
        apply(cluster, callers(namespace, "second"), agent(namespace, "second"))
        wait_ready(cluster, namespace, "second")
        assert b.metric("sentient_operator_leader") == 1
        delete_agents_and_wait(cluster.kubectl, namespace)
    finally:
        a.kill()
        if b is not None:
            b.terminate()


def test_graceful_stop_hands_over_at_once(
    cluster: Any, crds: list[str], namespace: str, tmp_path: Path
) -> None:
    a = OperatorProcess(cluster.kubeconfig, [namespace], identity="op-a", log_path=tmp_path / "a.log").start()
    b: OperatorProcess | None = None
    try:
        a.wait_for_log("acquired leadership")
        b = OperatorProcess(
            cluster.kubeconfig, [namespace], identity="op-b", log_path=tmp_path / "b.log"
        ).start()
        b.wait_for_log("standing by")
        assert a.terminate() == 0
        assert "released leadership" in "\n".join(a.messages())
        b.wait_for_log("acquired leadership", timeout=30)
    finally:
        a.kill()
        if b is not None:
            b.terminate()


def test_service_monitor_once_crd_installed(
    cluster: Any, crds: list[str], namespace: str, fake_upstream: Any
) -> None:
    if get(cluster, "crd", "servicemonitors.monitoring.coreos.com", "default") is not None:
        pytest.skip("the ServiceMonitor CRD is already installed in this cluster")
    with running_operator(cluster, namespace):
        spec: dict[str, Any] = {
            "monitoring": {"serviceMonitor": {"enabled": True, "labels": {"release": "prom"}}}
        }
        apply(
            cluster,
            *provider(namespace, fake_upstream.endpoint),
            callers(namespace),
            agent(namespace, **spec),
        )
        wait_ready(cluster, namespace)
        wait_for(
            lambda: (
                condition(get(cluster, "sentientagent", "helper", namespace), "Degraded").get("reason")
                == "ServiceMonitorCRDMissing"
            ),
            timeout=60,
            what="Degraded/ServiceMonitorCRDMissing",
        )
        try:
            apply(cluster, SERVICE_MONITOR_CRD)
            cluster.kubectl(
                "wait", "--for=condition=Established", "crd/servicemonitors.monitoring.coreos.com"
            )
            monitor = wait_for(
                lambda: get(cluster, "servicemonitors.monitoring.coreos.com", "helper", namespace),
                timeout=90,
                what="the ServiceMonitor",
            )
            assert monitor["metadata"]["labels"]["release"] == "prom"
            assert monitor["spec"]["endpoints"][0]["port"] == "metrics"
            wait_for(
                lambda: (
                    condition(get(cluster, "sentientagent", "helper", namespace), "Degraded").get("status")
                    == "False"
                ),
                timeout=60,
                what="Degraded=False",
            )
        finally:
            delete_agents_and_wait(cluster.kubectl, namespace)
            cluster.kubectl(
                "delete", "crd", "servicemonitors.monitoring.coreos.com", "--wait=true", check=False
            )


@pytest.mark.parametrize("strategy", ["HotReload", "RollingRestart"])
def test_rotation_rolls_only_with_rolling_restart(
    cluster: Any, crds: list[str], namespace: str, fake_upstream: Any, strategy: str
) -> None:
    with running_operator(cluster, namespace):
        docs = provider(namespace, fake_upstream.endpoint)
        apply(cluster, *docs, callers(namespace), agent(namespace, rotation={"strategy": strategy}))
        wait_ready(cluster, namespace)
        dep = get(cluster, "deployment", "helper", namespace)
        assert dep is not None
        template_before = dep["spec"]["template"]
        annotated = "sentient.dev/credentials-fingerprint" in template_before["metadata"]["annotations"]
        assert annotated is (strategy == "RollingRestart")
        if annotated:
            assert template_before["metadata"]["annotations"][
                "sentient.dev/credentials-fingerprint"
            ].startswith("hmac-sha256:")

        docs[0]["stringData"] = {"apiKey": "sk-e2e-rotated"}
        apply(cluster, docs[0])
        key = f"provider.{namespace}.fake.apiKey"

        def rebound() -> bool:
            secret = get(cluster, "secret", "helper-credentials", namespace) or {}
            return base64.b64decode((secret.get("data") or {}).get(key, "")).decode() == "sk-e2e-rotated"

        wait_for(rebound, timeout=60, what="the rotated key in the bound Secret")
        if strategy == "RollingRestart":
            wait_for(
                lambda: len(replica_sets(cluster, namespace, "helper")) == 2, timeout=60, what="a rollout"
            )
        else:
            # The bound Secret changed; a HotReload Deployment's template must not have.
            dep = get(cluster, "deployment", "helper", namespace)
            assert dep is not None and dep["spec"]["template"] == template_before
            assert len(replica_sets(cluster, namespace, "helper")) == 1
        wait_ready(cluster, namespace)
