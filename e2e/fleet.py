"""A fleet of agents for benchmarks and fault tests: manifests, readiness and child accounting.

One LLMProvider (its key in a Secret), one RateLimitPolicy and N SentientAgents, each with its own
API-key Secret. The provider points at ``endpoint`` (a closed port by default: the operator never
calls the upstream unless ``validateBeforeRollout`` is on, so no server is needed).
"""

from __future__ import annotations

import json
from collections import Counter
from collections.abc import Callable
from typing import Any

AGENT_CHILD_LABELS = "app.kubernetes.io/managed-by=sentient-operator,app.kubernetes.io/component=agent"
# The kinds every agent owns exactly one of (HPA and PDB only when asked for).
CHILD_KINDS = ("deployments", "services", "configmaps", "secrets")

Kubectl = Callable[..., str]


def agent_name(i: int) -> str:
    """The name of the i-th agent of a fleet."""
    return f"agent-{i:03d}"


def manifests(namespace: str, n: int, endpoint: str = "http://127.0.0.1:9/v1") -> list[dict[str, Any]]:
    """A provider with its key Secret, a policy, and N agents each with an API-key Secret."""
    docs: list[dict[str, Any]] = [
        {
            "apiVersion": "v1",
            "kind": "Secret",
            "metadata": {"name": "upstream-key", "namespace": namespace},
            "stringData": {"apiKey": "sk-bench"},
        },
        {
            "apiVersion": "sentient.dev/v1alpha1",
            "kind": "LLMProvider",
            "metadata": {"name": "upstream", "namespace": namespace},
            "spec": {
                "type": "openai-compatible",
                "endpoint": endpoint,
                "defaultModel": "m",
                "credentials": {"secretRef": {"name": "upstream-key", "key": "apiKey"}},
            },
        },
        {
            "apiVersion": "sentient.dev/v1alpha1",
            "kind": "RateLimitPolicy",
            "metadata": {"name": "standard", "namespace": namespace},
            "spec": {"limits": {"requestsPerMinute": 60}},
        },
    ]
    for i in range(n):
        name = agent_name(i)
        docs.append(
            {
                "apiVersion": "v1",
                "kind": "Secret",
                "metadata": {"name": f"{name}-callers", "namespace": namespace},
                "stringData": {"client": f"key-{i}"},
            }
        )
        docs.append(
            {
                "apiVersion": "sentient.dev/v1alpha1",
                "kind": "SentientAgent",
                "metadata": {"name": name, "namespace": namespace},
                "spec": {
                    "systemPrompt": f"You are agent {i}.",
                    "llm": {"chain": [{"providerRef": {"name": "upstream"}}]},
                    "rateLimitPolicyRef": {"name": "standard"},
                    "auth": {"apiKeys": {"secretRef": {"name": f"{name}-callers"}}},
                },
            }
        )
    return docs


def ready_agents(kubectl: Kubectl, namespace: str) -> set[str]:
    """Names of the agents whose Ready condition is True and current (observedGeneration)."""
    items = json.loads(kubectl("get", "sentientagents", "-n", namespace, "-o", "json"))["items"]
    ready = set()
    for item in items:
        generation = item["metadata"].get("generation")
        for cond in (item.get("status") or {}).get("conditions") or []:
            if (
                cond.get("type") == "Ready"
                and cond.get("status") == "True"
                and cond.get("observedGeneration", generation) == generation
            ):
                ready.add(item["metadata"]["name"])
    return ready


def child_census(kubectl: Kubectl, namespace: str) -> tuple[Counter[tuple[str, str]], list[str]]:
    """Children of agents by (kind, agent), and the children whose agent does not exist (orphans)."""
    agents = {
        i["metadata"]["name"]
        for i in json.loads(kubectl("get", "sentientagents", "-n", namespace, "-o", "json"))["items"]
    }
    out = json.loads(
        kubectl("get", ",".join(CHILD_KINDS), "-n", namespace, "-l", AGENT_CHILD_LABELS, "-o", "json")
    )
    counts: Counter[tuple[str, str]] = Counter()
    orphans: list[str] = []
    for obj in out["items"]:
        meta = obj["metadata"]
        agent = (meta.get("labels") or {}).get("app.kubernetes.io/instance", "")
        if meta.get("deletionTimestamp"):
            continue
        counts[(obj["kind"], agent)] += 1
        if agent not in agents:
            orphans.append(f"{obj['kind']}/{meta['name']}")
    return counts, orphans


def duplicates(counts: Counter[tuple[str, str]]) -> list[str]:
    """(kind, agent) pairs with more than one child."""
    return [f"{kind}/{agent} x{n}" for (kind, agent), n in sorted(counts.items()) if n > 1]
