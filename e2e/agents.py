"""The agent, provider and caller manifests the operator e2e tests apply, and waiting for Ready."""

from __future__ import annotations

from typing import Any

import httpx

from e2e.resources import get

PROVIDER_KEY = "sk-e2e-provider-key"
CALLER_KEY = "caller-e2e-key"


def provider(namespace: str, endpoint: str, name: str = "fake") -> list[dict[str, Any]]:
    """A Secret with the provider key and an openai-compatible LLMProvider reading it."""
    return [
        {
            "apiVersion": "v1",
            "kind": "Secret",
            "metadata": {"name": f"{name}-key", "namespace": namespace},
            "stringData": {"apiKey": PROVIDER_KEY},
        },
        {
            "apiVersion": "sentient.dev/v1alpha1",
            "kind": "LLMProvider",
            "metadata": {"name": name, "namespace": namespace},
            "spec": {
                "type": "openai-compatible",
                "endpoint": endpoint,
                "defaultModel": "fake-model",
                "credentials": {"secretRef": {"name": f"{name}-key", "key": "apiKey"}},
                "retry": {"maxAttempts": 1},
            },
        },
    ]


def agent(namespace: str, name: str = "helper", provider_name: str = "fake", **spec: Any) -> dict[str, Any]:
    """A SentientAgent with API-key auth."""
    body: dict[str, Any] = {
        "systemPrompt": "You are a test agent.",
        "llm": {"chain": [{"providerRef": {"name": provider_name}}]},
        "auth": {"apiKeys": {"secretRef": {"name": f"{name}-callers"}}},
    }
    body.update(spec)
    return {
        "apiVersion": "sentient.dev/v1alpha1",
        "kind": "SentientAgent",
        "metadata": {"name": name, "namespace": namespace},
        "spec": body,
    }


def callers(namespace: str, name: str = "helper") -> dict[str, Any]:
    """The agent's API-key Secret."""
    return {
        "apiVersion": "v1",
        "kind": "Secret",
        "metadata": {"name": f"{name}-callers", "namespace": namespace},
        "stringData": {"ci": CALLER_KEY, "ci.tier": "gold"},
    }


def chat(url: str, prompt: str) -> httpx.Response:
    """One non-streamed ``/v1/chat/completions`` request to the agent at ``url``, as the e2e caller."""
    return httpx.post(
        f"{url}/v1/chat/completions",
        headers={"Authorization": f"Bearer {CALLER_KEY}"},
        json={"model": "helper", "messages": [{"role": "user", "content": prompt}]},
        timeout=30,
    )


def wait_ready(cluster: Any, namespace: str, name: str = "helper", timeout: int = 90) -> dict[str, Any]:
    """``kubectl wait --for=condition=Ready`` on the agent; returns it."""
    cluster.kubectl(
        "wait",
        "--for=condition=Ready",
        f"sentientagent/{name}",
        "-n",
        namespace,
        f"--timeout={timeout}s",
        timeout=timeout + 30,
    )
    obj = get(cluster, "sentientagent", name, namespace)
    assert obj is not None
    return obj


def keyless_provider(namespace: str, name: str = "fake") -> dict[str, Any]:
    """An openai-compatible LLMProvider without credentials (no provider Secret to sync)."""
    return {
        "apiVersion": "sentient.dev/v1alpha1",
        "kind": "LLMProvider",
        "metadata": {"name": name, "namespace": namespace},
        "spec": {"type": "openai-compatible", "endpoint": "http://127.0.0.1:9/v1", "defaultModel": "m"},
    }
