"""The operator end to end on the local control plane: a real apiserver, controller-manager
(garbage collection, Deployments -> ReplicaSets -> Pods), scheduler and kwok (pods Ready).

Every test runs its own operator process (``e2e.operator_proc``) watching only the test's
namespace, and waits on cluster state or log lines, never on fixed sleeps.
"""

from __future__ import annotations

import base64
import json
from pathlib import Path
from typing import Any

import httpx
import pytest

from agent_runtime.testing import run_fake
from e2e.agent_pod import AgentPod
from e2e.agents import CALLER_KEY, PROVIDER_KEY, agent, callers, provider, wait_ready
from e2e.operator_proc import running_operator
from e2e.resources import apply, condition, get
from tests.support.waiting import wait_for


@pytest.fixture
def fake_upstream() -> Any:
    with run_fake("openai", api_key=PROVIDER_KEY) as fake:
        yield fake


def test_agent_ready_children_and_answers(
    cluster: Any, crds: list[str], k8s: Any, namespace: str, fake_upstream: Any, tmp_path: Path
) -> None:
    with running_operator(cluster, namespace) as op:
        apply(cluster, *provider(namespace, fake_upstream.endpoint), callers(namespace), agent(namespace))
        obj = wait_ready(cluster, namespace)
        status = obj["status"]
        assert status["endpoint"] == f"http://helper.{namespace}.svc:80"
        assert status["readyReplicas"] == 1
        assert status["observedGeneration"] == obj["metadata"]["generation"]
        for type_ in ("ProvidersResolved", "CredentialsReady"):
            assert condition(obj, type_)["status"] == "True"
        assert condition(obj, "Degraded")["status"] == "False"
        assert status["providers"] == [
            {"provider": f"{namespace}/fake", "model": "fake-model", "resolved": True, "ready": True}
        ]
        for kind, name in [
            ("configmap", "helper-config"),
            ("secret", "helper-credentials"),
            ("deployment", "helper"),
            ("service", "helper"),
        ]:
            child = get(cluster, kind, name, namespace)
            assert child is not None, f"{kind}/{name} missing"
            (owner,) = child["metadata"]["ownerReferences"]
            assert owner["kind"] == "SentientAgent" and owner["uid"] == obj["metadata"]["uid"]
            assert child["metadata"]["labels"]["app.kubernetes.io/managed-by"] == "sentient-operator"
        pods = json.loads(
            cluster.kubectl(
                "get", "pods", "-n", namespace, "-l", "app.kubernetes.io/instance=helper", "-o", "json"
            ).stdout
        )["items"]
        assert len(pods) == 1
        assert condition(pods[0], "Ready")["status"] == "True"

        secret = get(cluster, "secret", "helper-credentials", namespace)
        assert secret is not None
        data = {k: base64.b64decode(v).decode() for k, v in secret["data"].items()}
        assert data[f"provider.{namespace}.fake.apiKey"] == PROVIDER_KEY
        assert CALLER_KEY not in data["apikeys.json"]
        events = cluster.kubectl("get", "events", "-n", namespace, "-o", "json").stdout
        assert PROVIDER_KEY not in events and CALLER_KEY not in events

        # The rendered ConfigMap and Secret really run the agent.
        with AgentPod(k8s, namespace, "helper", tmp_path / "pod") as pod:
            pod.wait_ready()
            resp = httpx.post(
                f"{pod.url}/v1/chat/completions",
                headers={"Authorization": f"Bearer {CALLER_KEY}"},
                json={"model": "helper", "messages": [{"role": "user", "content": "hello operator"}]},
                timeout=30,
            )
            assert resp.status_code == 200, resp.text
            assert "hello operator" in resp.json()["choices"][0]["message"]["content"]
            denied = httpx.post(
                f"{pod.url}/v1/chat/completions",
                headers={"Authorization": "Bearer wrong"},
                json={"model": "helper", "messages": [{"role": "user", "content": "x"}]},
                timeout=30,
            )
            assert denied.status_code == 401
        assert not [line for line in op.lines if PROVIDER_KEY in line or CALLER_KEY in line]


def test_prompt_change_rolls_out_scale_follows(
    cluster: Any, crds: list[str], namespace: str, fake_upstream: Any
) -> None:
    with running_operator(cluster, namespace):
        apply(cluster, *provider(namespace, fake_upstream.endpoint), callers(namespace), agent(namespace))
        before = wait_ready(cluster, namespace)
        old_hash = before["status"]["configHash"]
        dep = get(cluster, "deployment", "helper", namespace)
        assert dep is not None
        assert dep["spec"]["template"]["metadata"]["annotations"]["sentient.dev/config-hash"] == old_hash

        cluster.kubectl(
            "patch",
            "sentientagent",
            "helper",
            "-n",
            namespace,
            "--type=merge",
            "-p",
            json.dumps({"spec": {"systemPrompt": "You are a changed agent."}}),
        )

        def rolled() -> dict[str, Any] | None:
            obj = get(cluster, "sentientagent", "helper", namespace)
            status = (obj or {}).get("status") or {}
            ready = condition(obj, "Ready")
            if (
                status.get("configHash") != old_hash
                and status.get("observedGeneration") == 2
                and ready.get("status") == "True"
                and ready.get("observedGeneration") == 2
            ):
                return obj
            return None

        after = wait_for(rolled, timeout=90, what="the new config to roll out")
        dep = get(cluster, "deployment", "helper", namespace)
        assert dep is not None
        assert (
            dep["spec"]["template"]["metadata"]["annotations"]["sentient.dev/config-hash"]
            == after["status"]["configHash"]
        )
        cm = get(cluster, "configmap", "helper-config", namespace)
        assert cm is not None and "You are a changed agent." in cm["data"]["config.yaml"]
        replica_sets = json.loads(
            cluster.kubectl(
                "get", "rs", "-n", namespace, "-l", "app.kubernetes.io/instance=helper", "-o", "json"
            ).stdout
        )["items"]
        assert len(replica_sets) == 2  # the rollout made a new ReplicaSet

        cluster.kubectl("scale", "sentientagent/helper", "-n", namespace, "--replicas=3")
        wait_for(
            lambda: (
                ((get(cluster, "deployment", "helper", namespace) or {}).get("status") or {}).get(
                    "readyReplicas"
                )
                == 3
            ),
            timeout=90,
            what="the Deployment to follow kubectl scale",
        )
        wait_for(lambda: get(cluster, "pdb", "helper", namespace), timeout=60, what="a PodDisruptionBudget")
        wait_for(
            lambda: (
                ((get(cluster, "sentientagent", "helper", namespace) or {}).get("status") or {}).get(
                    "readyReplicas"
                )
                == 3
            ),
            timeout=60,
            what="status.readyReplicas to follow",
        )


def test_drift_is_restored(cluster: Any, crds: list[str], namespace: str, fake_upstream: Any) -> None:
    with running_operator(cluster, namespace):
        apply(cluster, *provider(namespace, fake_upstream.endpoint), callers(namespace), agent(namespace))
        wait_ready(cluster, namespace)
        service = get(cluster, "service", "helper", namespace)
        assert service is not None
        cluster.kubectl("delete", "service", "helper", "-n", namespace)
        wait_for(
            lambda: (
                (get(cluster, "service", "helper", namespace) or {}).get("metadata", {}).get("uid")
                not in (None, service["metadata"]["uid"])
            ),
            timeout=60,
            what="the deleted Service to be recreated",
        )
        cluster.kubectl("scale", "deployment/helper", "-n", namespace, "--replicas=4")
        wait_for(
            lambda: (
                (get(cluster, "deployment", "helper", namespace) or {}).get("spec", {}).get("replicas") == 1
            ),
            timeout=60,
            what="the Deployment's replicas to be restored",
        )
        cluster.kubectl(
            "patch",
            "configmap",
            "helper-config",
            "-n",
            namespace,
            "--type=merge",
            "-p",
            json.dumps({"data": {"config.yaml": "tampered: true\n"}}),
        )
        wait_for(
            lambda: (
                "tampered"
                not in ((get(cluster, "configmap", "helper-config", namespace) or {}).get("data") or {}).get(
                    "config.yaml", "tampered"
                )
            ),
            timeout=60,
            what="the ConfigMap to be restored",
        )
        cluster.kubectl("delete", "secret", "helper-credentials", "-n", namespace)
        wait_for(
            lambda: get(cluster, "secret", "helper-credentials", namespace),
            timeout=60,
            what="the bound Secret",
        )


def test_missing_provider_then_created(
    cluster: Any, crds: list[str], namespace: str, fake_upstream: Any
) -> None:
    with running_operator(cluster, namespace) as op:
        apply(cluster, callers(namespace), agent(namespace, provider_name="later"))

        def blocked() -> dict[str, Any] | None:
            obj = get(cluster, "sentientagent", "helper", namespace)
            cond = condition(obj, "ProvidersResolved")
            return obj if cond.get("reason") == "ProviderNotFound" else None

        obj = wait_for(blocked, timeout=60, what="ProvidersResolved=False/ProviderNotFound")
        ready = condition(obj, "Ready")
        assert ready["status"] == "False" and ready["reason"] == "ProviderNotFound"
        assert "Traceback" not in ready["message"] and f"{namespace}/later" in ready["message"]
        assert condition(obj, "Degraded")["status"] == "True"
        assert get(cluster, "deployment", "helper", namespace) is None
        assert op.alive

        apply(cluster, *provider(namespace, fake_upstream.endpoint, name="later"))
        wait_ready(cluster, namespace)
        assert all("Traceback" not in line for line in op.lines)


def test_forbidden_provider_in_other_namespace(
    cluster: Any, crds: list[str], namespace: str, fake_upstream: Any
) -> None:
    # One operator serves both namespaces: the provider's own and the agent's.
    other = f"{namespace}-p"[:63]
    cluster.kubectl("create", "namespace", other)
    try:
        with running_operator(cluster, namespace, extra_namespaces=[other]):
            docs = provider(other, fake_upstream.endpoint)
            apply(cluster, *docs, callers(namespace))
            ref = {"providerRef": {"name": "fake", "namespace": other}}
            apply(cluster, agent(namespace, llm={"chain": [ref]}))
            wait_for(
                lambda: (
                    condition(get(cluster, "sentientagent", "helper", namespace), "ProvidersResolved").get(
                        "reason"
                    )
                    == "ProviderForbidden"
                ),
                timeout=60,
                what="ProviderForbidden",
            )
            docs[1]["spec"]["allowedNamespaces"] = [namespace]
            apply(cluster, docs[1])
            wait_ready(cluster, namespace)
    finally:
        cluster.kubectl("delete", "namespace", other, "--wait=false", check=False)


def test_delete_agent_children_garbage_collected(
    cluster: Any, crds: list[str], namespace: str, fake_upstream: Any
) -> None:
    with running_operator(cluster, namespace):
        apply(
            cluster,
            *provider(namespace, fake_upstream.endpoint),
            callers(namespace),
            agent(namespace, replicas=2),
        )
        wait_ready(cluster, namespace)
        assert get(cluster, "pdb", "helper", namespace) is not None
        cluster.kubectl("delete", "sentientagent", "helper", "-n", namespace, "--wait=true", "--timeout=60s")

        def all_gone() -> bool:
            return all(
                get(cluster, kind, name, namespace) is None
                for kind, name in [
                    ("deployment", "helper"),
                    ("service", "helper"),
                    ("configmap", "helper-config"),
                    ("secret", "helper-credentials"),
                    ("pdb", "helper"),
                ]
            )

        wait_for(all_gone, timeout=90, what="garbage collection of every child")


def test_examples_agent_yaml(cluster: Any, crds: list[str], namespace: str) -> None:
    example = Path(__file__).resolve().parent.parent / "examples" / "agent.yaml"
    with running_operator(cluster, namespace):
        cluster.kubectl("apply", "-n", namespace, "-f", str(example))
        obj = wait_ready(cluster, namespace, "assistant")
        assert obj["status"]["providersReady"] == "1/1"
        for kind in (
            "configmap/assistant-config",
            "secret/assistant-credentials",
            "deployment/assistant",
            "service/assistant",
        ):
            cluster.kubectl("get", kind, "-n", namespace)
        wait_for(
            lambda: (
                ((get(cluster, "ratelimitpolicy", "demo-limits", namespace) or {}).get("status") or {}).get(
                    "agents"
                )
                == 1
            ),
            timeout=60,
            what="the policy to count its agent",
        )
        policy = get(cluster, "ratelimitpolicy", "demo-limits", namespace)
        assert condition(policy, "Ready")["status"] == "True"
        table = cluster.kubectl("get", "sentientagent", "assistant", "-n", namespace).stdout
        assert "True" in table and "1/1" in table
