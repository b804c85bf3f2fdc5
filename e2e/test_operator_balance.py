"""A load-balanced chain step end to end: two LLMProviders (one key each) as the members of one
step, applied to the apiserver, rendered by the operator, served by a runtime fed with exactly the
ConfigMap and Secret the operator wrote; requests spread 1:1 over two fake upstreams, each seeing
its own key, and failing over inside the step when one member fails."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import httpx
import pytest

from agent_runtime.testing import Fault, run_fake
from e2e.agent_pod import AgentPod
from e2e.agents import CALLER_KEY, PROVIDER_KEY, agent, callers, provider, wait_ready
from e2e.operator_proc import running_operator
from e2e.resources import apply

SECOND_KEY = "sk-e2e-second-provider-key"


@pytest.fixture
def upstreams() -> Any:
    with run_fake("openai", api_key=PROVIDER_KEY) as first, run_fake("openai", api_key=SECOND_KEY) as second:
        yield first, second


def _chat(pod: AgentPod) -> httpx.Response:
    return httpx.post(
        f"{pod.url}/v1/chat/completions",
        headers={"Authorization": f"Bearer {CALLER_KEY}"},
        json={"model": "helper", "messages": [{"role": "user", "content": "hello there"}]},
        timeout=30,
    )


def test_a_balanced_step_spreads_over_two_keys(
    cluster: Any, crds: list[str], k8s: Any, namespace: str, upstreams: Any, tmp_path: Path
) -> None:
    first, second = upstreams
    key_a = provider(namespace, first.endpoint, name="key-a")
    key_b = provider(namespace, second.endpoint, name="key-b")
    key_b[0]["stringData"]["apiKey"] = SECOND_KEY
    chain = [{"members": [{"providerRef": {"name": "key-a"}}, {"providerRef": {"name": "key-b"}}]}]
    with running_operator(cluster, namespace):
        apply(cluster, *key_a, *key_b, callers(namespace), agent(namespace, llm={"chain": chain}))
        obj = wait_ready(cluster, namespace)
        assert obj["status"]["providersReady"] == "2/2"
        assert [p["provider"] for p in obj["status"]["providers"]] == [
            f"{namespace}/key-a",
            f"{namespace}/key-b",
        ]
        with AgentPod(k8s, namespace, "helper", tmp_path / "pod") as pod:
            pod.wait_ready()
            for _ in range(10):
                response = _chat(pod)
                assert response.status_code == 200, response.text
            # Weights 1:1, smooth round robin: exactly half each, each with its own key.
            assert (first.state.requests, second.state.requests) == (5, 5)
            assert set(first.state.keys_seen) == {PROVIDER_KEY} and set(second.state.keys_seen) == {
                SECOND_KEY
            }
            assert first.state.auth_failures == second.state.auth_failures == 0
            # The member picked next fails: the step's other member answers.
            first.inject(Fault("status", status=500))
            response = _chat(pod)
            assert response.status_code == 200, response.text
            assert second.state.requests == 6
