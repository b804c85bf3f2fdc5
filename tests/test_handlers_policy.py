"""RateLimitPolicy status from the in-memory view (no cluster)."""

from __future__ import annotations

import base64
from collections.abc import Iterator
from typing import Any

import pytest

from sentient_operator.reconcile.cache import ClusterCache
from sentient_operator.reconcile.policy import policy_events, policy_references, policy_status
from sentient_operator.reconcile.snapshot import Snapshot

cache = ClusterCache()


@pytest.fixture
def view() -> Iterator[dict[str, dict[Any, list[Snapshot]]]]:
    stores: dict[str, dict[Any, list[Snapshot]]] = {"agents": {}, "policies": {}}
    # kopf indexes map keys to stores of values; dicts of lists behave alike for the cache.
    cache.agents, cache.policies = stores["agents"], stores["policies"]  # type: ignore[assignment]
    try:
        yield stores
    finally:
        cache.agents = cache.policies = None


def policy(backend: dict[str, Any] | None = None, generation: int = 3) -> dict[str, Any]:
    spec: dict[str, Any] = {"limits": {"requestsPerMinute": 60}}
    if backend:
        spec["backend"] = backend
    return {"metadata": {"name": "std", "namespace": "team", "generation": generation}, "spec": spec}


def test_counts_agents_and_is_ready(view: dict[str, dict[Any, list[Snapshot]]]) -> None:
    view["agents"][("team", "a")] = [Snapshot({"spec": {"rateLimitPolicyRef": {"name": "std"}}})]
    view["agents"][("other", "b")] = [
        Snapshot({"spec": {"rateLimitPolicyRef": {"name": "std", "namespace": "team"}}})
    ]
    view["agents"][("other", "c")] = [Snapshot({"spec": {"rateLimitPolicyRef": {"name": "std"}}})]
    assert cache.agents_using_policy("team", "std") == 2
    status = policy_status(cache, policy())
    assert status["agents"] == 2 and status["observedGeneration"] == 3
    (ready,) = status["conditions"]
    assert (ready["type"], ready["status"], ready["reason"], ready["observedGeneration"]) == (
        "Ready",
        "True",
        "Valid",
        3,
    )


def test_redis_secret_must_exist(view: dict[str, dict[Any, list[dict[str, Any]]]]) -> None:
    backend = {"type": "redis", "redis": {"addressSecretRef": {"name": "redis", "key": "url"}}}
    (ready,) = policy_status(cache, policy(backend))["conditions"]
    assert (ready["status"], ready["reason"]) == ("False", "SecretNotFound")
    url = base64.b64encode(b"redis://r:6379/0").decode()
    cache.secrets.put({"metadata": {"namespace": "team", "name": "redis"}, "data": {"url": url}})
    (ready,) = policy_status(cache, policy(backend))["conditions"]
    assert (ready["status"], ready["reason"]) == ("True", "Valid")
    assert "redis://" not in ready["message"]


def test_redis_secret_without_the_key_says_so(view: dict[str, dict[Any, list[dict[str, Any]]]]) -> None:
    """The Secret is there but the key is not: SecretKeyNotFound (the agents' reason), never the
    values of the keys that are there."""
    backend = {"type": "redis", "redis": {"addressSecretRef": {"name": "redis-keyed", "key": "url"}}}
    other = base64.b64encode(b"redis://:hunter2@r:6379/0").decode()
    cache.secrets.put({"metadata": {"namespace": "team", "name": "redis-keyed"}, "data": {"uri": other}})
    (ready,) = policy_status(cache, policy(backend))["conditions"]
    assert (ready["status"], ready["reason"]) == ("False", "SecretKeyNotFound")
    assert "team/redis-keyed" in ready["message"] and "url" in ready["message"]
    assert "hunter2" not in ready["message"] and "redis://" not in ready["message"]


def test_cluster_password_secret_must_exist(view: dict[str, dict[Any, list[dict[str, Any]]]]) -> None:
    backend = {
        "type": "redis",
        "redis": {
            "mode": "cluster",
            "cluster": {"nodes": ["redis-0:6379"]},
            "passwordSecretRef": {"name": "redis-cluster", "key": "password"},
        },
    }
    assert policy_references(policy(backend)) == {("Secret", "team", "redis-cluster")}
    (ready,) = policy_status(cache, policy(backend))["conditions"]
    assert (ready["status"], ready["reason"]) == ("False", "SecretNotFound")
    assert "redis-cluster" in ready["message"] and "password" in ready["message"]
    value = base64.b64encode(b"hunter2").decode()
    cache.secrets.put(
        {"metadata": {"namespace": "team", "name": "redis-cluster"}, "data": {"password": value}}
    )
    (ready,) = policy_status(cache, policy(backend))["conditions"]
    assert (ready["status"], ready["reason"]) == ("True", "Valid")


def test_invalid_spec(view: dict[str, dict[Any, list[dict[str, Any]]]]) -> None:
    bad = policy()
    bad["spec"]["limits"] = {"requestsPerMinute": 0}
    (ready,) = policy_status(cache, bad)["conditions"]
    assert (ready["status"], ready["reason"]) == ("False", "InvalidSpec")


def test_a_status_write_neither_recounts_its_echo_nor_re_renders_the_agents() -> None:
    """While a fleet is created the agent count is written about once a second; before, each
    write re-reconciled every agent using the policy (thousands of reconciles at 1000 agents)."""
    from sentient_operator.reconcile.controller import Controller
    from sentient_operator.reconcile.policy import PolicyReconciler
    from sentient_operator.settings import Settings

    policies = PolicyReconciler(cache, Controller(Settings(), cache))

    def event(type_: str | None, generation: int, version: str) -> tuple[bool, bool]:
        body = policy(generation=generation)
        body["metadata"]["resourceVersion"] = version
        return policies.hear(type_, "team", "std", body)

    assert event(None, 3, "10") == (True, True)  # the listing at start: agents render it
    assert event("MODIFIED", 3, "11") == (True, False)  # a status change: recount only
    policies._written.record("team", "std", "12")  # the resourceVersion our own status write made
    assert event("MODIFIED", 3, "12") == (False, False)  # its echo: nothing
    assert event("MODIFIED", 4, "13") == (True, True)  # a spec change: every agent re-renders
    assert event("DELETED", 4, "14") == (True, True)


def test_the_count_follows_edits_and_deletions(view: dict[str, dict[Any, list[Snapshot]]]) -> None:
    def agent(rv: str, policy_name: str | None) -> list[Snapshot]:
        spec = {"rateLimitPolicyRef": {"name": policy_name}} if policy_name else {}
        return [Snapshot({"metadata": {"resourceVersion": rv}, "spec": spec})]

    view["agents"][("team", "a")] = agent("1", "std")
    view["agents"][("team", "b")] = agent("2", "std")
    assert cache.agents_using_policy("team", "std") == 2
    view["agents"][("team", "a")] = agent("3", "premium")  # edited to use another policy
    assert cache.agents_using_policy("team", "std") == 1
    assert cache.agents_using_policy("team", "premium") == 1
    del view["agents"][("team", "b")]
    view["agents"][("team", "c")] = agent("4", None)
    assert cache.agents_using_policy("team", "std") == 0


def test_events_on_transitions_only() -> None:
    def ready(status: str, reason: str) -> list[dict[str, Any]]:
        return [{"type": "Ready", "status": status, "reason": reason, "message": f"m-{reason}"}]

    assert policy_events(None, ready("True", "Valid")) == []  # a new healthy policy: no news
    assert policy_events(None, ready("False", "SecretNotFound")) == [
        ("SecretNotFound", "m-SecretNotFound", "Warning")
    ]
    assert policy_events(ready("False", "SecretNotFound"), ready("False", "SecretNotFound")) == []
    assert policy_events(ready("False", "SecretNotFound"), ready("False", "SecretKeyNotFound")) == [
        ("SecretKeyNotFound", "m-SecretKeyNotFound", "Warning")
    ]
    assert policy_events(ready("False", "SecretKeyNotFound"), ready("True", "Valid")) == [
        ("Ready", "the policy is usable again", "Normal")
    ]
    assert policy_events(ready("True", "Valid"), ready("True", "Valid")) == []
