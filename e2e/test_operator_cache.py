"""The response cache end to end: spec.cache applied to the apiserver, rendered by the operator
(the cache's Redis URL bound from its Secret), enforced by a runtime fed with exactly the ConfigMap
and Secret the operator wrote, against a real Redis and the fake upstream counting its calls."""

from __future__ import annotations

import base64
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import yaml

from agent_runtime.testing import run_fake
from e2e.agent_pod import AgentPod
from e2e.agents import PROVIDER_KEY, agent, callers, chat, provider, wait_ready
from e2e.operator_proc import running_operator
from e2e.resources import apply, get
from tests.support.redis_server import RedisServer, redis_or_skip


@pytest.fixture
def fake_upstream() -> Any:
    with run_fake("openai", api_key=PROVIDER_KEY) as fake:
        yield fake


@pytest.fixture
def redis_server() -> Iterator[RedisServer]:
    with redis_or_skip() as server:
        yield server


def _chat(pod: AgentPod, prompt: str) -> httpx.Response:
    return chat(pod.url, prompt)


def test_cache_rendered_bound_and_served(
    cluster: Any,
    crds: list[str],
    k8s: Any,
    namespace: str,
    fake_upstream: Any,
    redis_server: RedisServer,
    tmp_path: Path,
) -> None:
    redis_secret = {
        "apiVersion": "v1",
        "kind": "Secret",
        "metadata": {"name": "cache-redis", "namespace": namespace},
        "stringData": {"url": redis_server.url},
    }
    cache = {
        "enabled": True,
        "backend": "redis",
        "ttl": "5m",
        "scope": "principal",
        "redis": {"addressSecretRef": {"name": "cache-redis", "key": "url"}},
    }
    with running_operator(cluster, namespace):
        apply(
            cluster,
            *provider(namespace, fake_upstream.endpoint),
            callers(namespace),
            redis_secret,
            agent(namespace, cache=cache),
        )
        wait_ready(cluster, namespace)
        config_map = get(cluster, "configmap", "helper-config", namespace)
        assert config_map is not None
        rendered = yaml.safe_load(config_map["data"]["config.yaml"])["cache"]
        assert (rendered["redis"]["mode"], rendered["redis"]["urlFile"]) == ("standalone", "cache-redis-url")
        bound = get(cluster, "secret", "helper-credentials", namespace)
        assert bound is not None
        assert base64.b64decode(bound["data"]["cache-redis-url"]).decode() == redis_server.url
        with AgentPod(k8s, namespace, "helper", tmp_path / "pod") as pod:
            pod.wait_ready()
            before = fake_upstream.state.requests
            first = _chat(pod, "what does the cache keep")
            second = _chat(pod, "what does the cache keep")
            assert first.status_code == second.status_code == 200, first.text
            assert (first.headers["x-sentient-cache"], second.headers["x-sentient-cache"]) == ("miss", "hit")
            assert first.json()["choices"] == second.json()["choices"]
            assert fake_upstream.state.requests == before + 1
