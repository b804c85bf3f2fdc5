"""The operator runs with exactly the permissions docs/operator.md lists, nothing more.

A ServiceAccount gets those rules (namespaced mode: one served namespace, which is also the
operator's own), the operator runs with that account's token, and an agent with a provider,
a policy and API keys becomes Ready; drift is restored and an HPA is deleted again.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
import yaml

from agent_runtime.testing import run_fake
from e2e.operator_proc import running_operator, wait_for
from e2e.test_operator_agents import PROVIDER_KEY, agent, apply, callers, get, provider, wait_ready

NAMESPACED_RULES: list[dict[str, Any]] = [
    {
        "apiGroups": ["sentient.dev"],
        "resources": ["sentientagents", "llmproviders", "ratelimitpolicies"],
        "verbs": ["get", "list", "watch"],
    },
    {
        "apiGroups": ["sentient.dev"],
        "resources": ["sentientagents/status", "llmproviders/status", "ratelimitpolicies/status"],
        "verbs": ["get", "patch"],
    },
    {
        "apiGroups": [""],
        "resources": ["configmaps", "secrets"],
        "verbs": ["get", "list", "watch", "create", "patch"],
    },
    {"apiGroups": [""], "resources": ["services"], "verbs": ["get", "list", "watch", "create", "patch"]},
    {
        "apiGroups": ["apps"],
        "resources": ["deployments"],
        "verbs": ["get", "list", "watch", "create", "patch"],
    },
    {
        "apiGroups": ["autoscaling"],
        "resources": ["horizontalpodautoscalers"],
        "verbs": ["get", "list", "watch", "create", "patch", "delete"],
    },
    {
        "apiGroups": ["policy"],
        "resources": ["poddisruptionbudgets"],
        "verbs": ["get", "list", "watch", "create", "patch", "delete"],
    },
    {
        "apiGroups": ["monitoring.coreos.com"],
        "resources": ["servicemonitors"],
        "verbs": ["get", "list", "watch", "create", "patch", "delete"],
    },
    {"apiGroups": [""], "resources": ["events"], "verbs": ["create"]},
    # The operator's own namespace (here the same one): leader Lease and fingerprint key.
    {"apiGroups": ["coordination.k8s.io"], "resources": ["leases"], "verbs": ["create"]},
    {
        "apiGroups": ["coordination.k8s.io"],
        "resources": ["leases"],
        "resourceNames": ["sentient-operator"],
        "verbs": ["get", "update"],
    },
]
CLUSTER_RULES: list[dict[str, Any]] = [
    {
        "apiGroups": ["apiextensions.k8s.io"],
        "resources": ["customresourcedefinitions"],
        "verbs": ["get", "list", "watch"],
    },
    {"apiGroups": [""], "resources": ["namespaces"], "verbs": ["list", "watch"]},
]


def token_kubeconfig(cluster: Any, namespace: str, account: str, path: Path) -> str:
    """A kubeconfig for ``account``'s token on the same server and CA as the admin one."""
    admin = yaml.safe_load(Path(cluster.kubeconfig).read_text())
    token = cluster.kubectl("create", "token", account, "-n", namespace, "--duration=1h").stdout.strip()
    ctx = next(c for c in admin["contexts"] if c["name"] == admin["current-context"])["context"]
    server = next(c for c in admin["clusters"] if c["name"] == ctx["cluster"])
    config = {
        "apiVersion": "v1",
        "kind": "Config",
        "clusters": [server],
        "users": [{"name": account, "user": {"token": token}}],
        "contexts": [{"name": account, "context": {"cluster": server["name"], "user": account}}],
        "current-context": account,
    }
    path.write_text(yaml.safe_dump(config))
    path.chmod(0o600)
    return str(path)


@pytest.fixture
def fake_upstream() -> Any:
    with run_fake("openai", api_key=PROVIDER_KEY) as fake:
        yield fake


def test_documented_rbac_is_enough(
    cluster: Any, crds: list[str], namespace: str, fake_upstream: Any, tmp_path: Path
) -> None:
    account = "sentient-operator"
    cluster_role = f"{namespace}-operator"[:63]
    apply(
        cluster,
        {"apiVersion": "v1", "kind": "ServiceAccount", "metadata": {"name": account, "namespace": namespace}},
        {
            "apiVersion": "rbac.authorization.k8s.io/v1",
            "kind": "Role",
            "metadata": {"name": account, "namespace": namespace},
            "rules": NAMESPACED_RULES,
        },
        {
            "apiVersion": "rbac.authorization.k8s.io/v1",
            "kind": "RoleBinding",
            "metadata": {"name": account, "namespace": namespace},
            "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "Role", "name": account},
            "subjects": [{"kind": "ServiceAccount", "name": account, "namespace": namespace}],
        },
        {
            "apiVersion": "rbac.authorization.k8s.io/v1",
            "kind": "ClusterRole",
            "metadata": {"name": cluster_role},
            "rules": CLUSTER_RULES,
        },
        {
            "apiVersion": "rbac.authorization.k8s.io/v1",
            "kind": "ClusterRoleBinding",
            "metadata": {"name": cluster_role},
            "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "ClusterRole", "name": cluster_role},
            "subjects": [{"kind": "ServiceAccount", "name": account, "namespace": namespace}],
        },
    )
    kubeconfig = token_kubeconfig(cluster, namespace, account, tmp_path / "kubeconfig")
    proxy = type("C", (), {"kubeconfig": kubeconfig, "kubectl": cluster.kubectl})()
    try:
        with running_operator(proxy, namespace) as op:
            policy = {
                "apiVersion": "sentient.dev/v1alpha1",
                "kind": "RateLimitPolicy",
                "metadata": {"name": "std", "namespace": namespace},
                "spec": {"limits": {"requestsPerMinute": 60}},
            }
            apply(cluster, *provider(namespace, fake_upstream.endpoint), policy, callers(namespace))
            apply(cluster, agent(namespace, rateLimitPolicyRef={"name": "std"}, replicas=2))
            wait_ready(cluster, namespace)
            assert get(cluster, "pdb", "helper", namespace) is not None
            cluster.kubectl(
                "patch",
                "sentientagent",
                "helper",
                "-n",
                namespace,
                "--type=merge",
                "-p",
                json.dumps({"spec": {"autoscaling": {"minReplicas": 1, "maxReplicas": 3}}}),
            )
            wait_for(lambda: get(cluster, "hpa", "helper", namespace), timeout=60, what="an HPA")
            cluster.kubectl(
                "patch",
                "sentientagent",
                "helper",
                "-n",
                namespace,
                "--type=json",
                "-p",
                json.dumps([{"op": "remove", "path": "/spec/autoscaling"}]),
            )
            wait_for(
                lambda: get(cluster, "hpa", "helper", namespace) is None, timeout=60, what="the HPA deleted"
            )
            cluster.kubectl("delete", "service", "helper", "-n", namespace)
            wait_for(
                lambda: get(cluster, "service", "helper", namespace), timeout=60, what="the Service restored"
            )
            assert not [line for line in op.lines if "forbidden" in line.lower()]
    finally:
        cluster.kubectl("delete", "clusterrole,clusterrolebinding", cluster_role, check=False)
