"""A canary secret value goes through sync, use, rotation, faults and deletion, and afterwards
appears nowhere it must not: operator and runtime logs, Events, any status, any annotation,
ConfigMaps, Deployments / ReplicaSets / Pods. Secret *data* is the only place it may live.

Besides the value itself, its base64 form and its plain (unkeyed) SHA-256 are searched for:
a plain hash on a pod template lets anyone who can read Deployments test guesses offline.
"""

from __future__ import annotations

import base64
import hashlib
import json
import secrets
from pathlib import Path
from typing import Any

import httpx
from kubernetes import client as kc

from agent_runtime.testing import FakeUpstream
from e2e.agent_pod import AgentPod
from e2e.operator_proc import OperatorProcess
from tests.support.kube_helpers import (
    GROUP,
    VERSION,
    condition_is,
    create_provider,
    delete_secret,
    put_secret,
    secret_value,
)
from tests.support.waiting import wait_for


def _forms(value: str) -> list[str]:
    return [value, base64.b64encode(value.encode()).decode(), hashlib.sha256(value.encode()).hexdigest()]


def _snapshot(k8s: Any, namespace: str) -> list[tuple[str, str]]:
    """(where, JSON text) of everything that must stay clean; Secrets without their data."""
    core, apps = kc.CoreV1Api(k8s), kc.AppsV1Api(k8s)
    custom = kc.CustomObjectsApi(k8s)
    out: list[tuple[str, str]] = []

    def add(kind: str, items: list[Any]) -> None:
        for item in items:
            obj: dict[str, Any] = item if isinstance(item, dict) else k8s.sanitize_for_serialization(item)
            out.append((f"{kind}/{obj['metadata']['name']}", json.dumps(obj)))

    add("ConfigMap", core.list_namespaced_config_map(namespace).items)
    add("Deployment", apps.list_namespaced_deployment(namespace).items)
    add("ReplicaSet", apps.list_namespaced_replica_set(namespace).items)
    add("Pod", core.list_namespaced_pod(namespace).items)
    add("Event", core.list_namespaced_event(namespace).items)
    add("Service", core.list_namespaced_service(namespace).items)
    for plural in ("llmproviders", "sentientagents"):
        listing: Any = custom.list_namespaced_custom_object(GROUP, VERSION, namespace, plural)
        add(plural, listing["items"])
    for secret in core.list_namespaced_secret(namespace).items:
        meta = k8s.sanitize_for_serialization(secret.metadata)
        out.append((f"Secret/{meta.get('name')} metadata", json.dumps(meta)))
    return out


def test_canary_value_never_leaks(
    cluster: Any, crds: list[str], k8s: Any, namespace: str, tmp_path: Path
) -> None:
    canary = f"sk-canary-{secrets.token_hex(16)}"
    rotated = f"sk-canary-{secrets.token_hex(16)}"
    snapshots: list[tuple[str, str]] = []
    with (
        FakeUpstream("openai", tokens=5) as fake,
        OperatorProcess(cluster.kubeconfig, [namespace], leader_election=False, log_format="text") as op,
    ):
        put_secret(k8s, namespace, "canary-key", {"apiKey": canary})
        create_provider(
            k8s,
            namespace,
            "canary",
            {
                "type": "openai-compatible",
                "endpoint": fake.endpoint,
                "defaultModel": "fake-model",
                "credentials": {"secretRef": {"name": "canary-key", "key": "apiKey"}},
            },
        )
        kc.CustomObjectsApi(k8s).create_namespaced_custom_object(
            GROUP,
            VERSION,
            namespace,
            "sentientagents",
            {
                "apiVersion": f"{GROUP}/{VERSION}",
                "kind": "SentientAgent",
                "metadata": {"name": "canary"},
                "spec": {
                    "systemPrompt": "canary",
                    "llm": {"chain": [{"providerRef": {"name": "canary"}}]},
                    "auth": {"anonymous": True},
                    "rotation": {"strategy": "RollingRestart"},
                },
            },
        )
        wait_for(lambda: secret_value(k8s, namespace, "sentient-provider-canary") == canary, "sync")
        with AgentPod(k8s, namespace, "canary", tmp_path / "pod", interval=0.2) as pod:
            pod.wait_ready()

            def ask() -> bool:
                body = {"model": "canary", "messages": [{"role": "user", "content": "hi"}]}
                resp = httpx.post(f"{pod.url}/v1/chat/completions", json=body, timeout=30)
                assert resp.status_code == 200, resp.text[:200]
                return True

            ask()
            assert fake.state.keys_seen.get(canary)
            snapshots += _snapshot(k8s, namespace)

            # Rotation (RollingRestart: the pod template's fingerprint annotation changes).
            put_secret(k8s, namespace, "canary-key", {"apiKey": rotated})
            wait_for(
                lambda: (
                    secret_value(
                        k8s, namespace, "canary-credentials", "provider." + namespace + ".canary.apiKey"
                    )
                    == rotated
                    or None
                ),
                "bound Secret rotated",
            )
            wait_for(lambda: ask() and fake.state.keys_seen.get(rotated), "rotated key in use")
            snapshots += _snapshot(k8s, namespace)

            # Faults: an empty value, then a deleted source; the last good value stays bound.
            put_secret(k8s, namespace, "canary-key", {"apiKey": ""})
            wait_for(
                lambda: condition_is(k8s, namespace, "canary", "CredentialsSynced", "False", "Malformed"),
                "Malformed",
            )
            delete_secret(k8s, namespace, "canary-key")
            wait_for(
                lambda: condition_is(
                    k8s, namespace, "canary", "CredentialsSynced", "False", "SecretNotFound"
                ),
                "SecretNotFound",
            )
            ask()
            snapshots += _snapshot(k8s, namespace)
            runtime_log = pod.log_path.read_text(errors="replace")

        # Deletion: the agent and the provider go; their Secrets follow by garbage collection.
        custom = kc.CustomObjectsApi(k8s)
        custom.delete_namespaced_custom_object(GROUP, VERSION, namespace, "sentientagents", "canary")
        custom.delete_namespaced_custom_object(GROUP, VERSION, namespace, "llmproviders", "canary")
        wait_for(
            lambda: secret_value(k8s, namespace, "sentient-provider-canary") is None or None,
            "provider Secret gone",
        )
        snapshots += _snapshot(k8s, namespace)
        operator_log = op.log_text()

    sources = [("operator log", operator_log), ("runtime log", runtime_log), *snapshots]
    for value in (canary, rotated):
        for form in _forms(value):
            leaks = [where for where, text in sources if form in text]
            assert leaks == [], f"a form of the canary leaked into {leaks}"
    # The checks above ran over real content: the operator did log, events were recorded.
    assert "sentient" in operator_log.lower()
    assert any(where.startswith("Event/") for where, _ in snapshots)
    deployments = [text for where, text in snapshots if where.startswith("Deployment/")]
    assert deployments and any("hmac-sha256:" in text for text in deployments)
