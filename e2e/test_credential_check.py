"""A provider key the upstream refuses is visible on the LLMProvider and on its agents (issue 15).

The project's fake upstream checks the key on every route, /models included. A wrong key put into
the provider's Secret shows within 30 s as ``CredentialsValid=False/Unauthorized`` on the provider
and on the agent (naming the provider, never the key), with one Warning Event each per transition;
the right key clears both; a key revoked at the upstream is found by the periodic check.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Iterator
from typing import Any

import pytest

from agent_runtime.testing.control import FakeUpstream
from e2e.agents import PROVIDER_KEY, agent, callers, provider, wait_ready
from e2e.operator_proc import running_operator
from e2e.resources import apply, condition, events, get
from tests.support.waiting import wait_for

#: Short, so that "several checks, still one Event" and the revocation take seconds.
CHECK_SECONDS = 2


@pytest.fixture
def upstream() -> Iterator[FakeUpstream]:
    with FakeUpstream("openai", api_key=PROVIDER_KEY) as fake:
        yield fake


def _events(cluster: Any, namespace: str, name: str, reason: str) -> list[dict[str, Any]]:
    return events(cluster, namespace, f"involvedObject.name={name},reason={reason}")


def _reason(cluster: Any, kind: str, name: str, namespace: str, type_: str) -> str | None:
    return condition(get(cluster, kind, name, namespace), type_).get("reason")


def _valid(cluster: Any, kind: str, name: str, namespace: str) -> Callable[[], bool]:
    return lambda: condition(get(cluster, kind, name, namespace), "CredentialsValid").get("status") == "True"


def test_refused_key_shows_on_provider_and_agent_and_clears(
    cluster: Any, crds: list[str], namespace: str, upstream: FakeUpstream
) -> None:
    env = {"SENTIENT_CREDENTIAL_CHECK_SECONDS": str(CHECK_SECONDS)}
    with running_operator(cluster, namespace, env=env):
        docs = provider(namespace, upstream.endpoint)
        apply(cluster, *docs, callers(namespace), agent(namespace))
        wait_ready(cluster, namespace)
        wait_for(
            lambda: _reason(cluster, "llmprovider", "fake", namespace, "CredentialsValid") == "Valid",
            timeout=30,
            what="the provider's key to be checked",
        )

        docs[0]["stringData"] = {"apiKey": "sk-e2e-wrong"}
        apply(cluster, docs[0])
        started = time.monotonic()
        wait_for(
            lambda: _reason(cluster, "llmprovider", "fake", namespace, "CredentialsValid") == "Unauthorized",
            timeout=30,
            what="LLMProvider CredentialsValid=False/Unauthorized",
        )
        wait_for(
            lambda: (
                _reason(cluster, "sentientagent", "helper", namespace, "CredentialsValid") == "Unauthorized"
            ),
            timeout=30 - (time.monotonic() - started),
            what="SentientAgent CredentialsValid=False/Unauthorized",
        )
        prov = get(cluster, "llmprovider", "fake", namespace)
        assert condition(prov, "Ready")["reason"] == "Unauthorized"
        agent_obj = get(cluster, "sentientagent", "helper", namespace)
        message = condition(agent_obj, "CredentialsValid")["message"]
        assert f"LLMProvider {namespace}/fake" in message and "401" in message
        assert condition(agent_obj, "Degraded")["reason"] == "Unauthorized"
        assert "sk-e2e-wrong" not in json.dumps([prov, agent_obj])
        wait_for(
            lambda: (
                _events(cluster, namespace, "fake", "Unauthorized")
                and _events(cluster, namespace, "helper", "Unauthorized")
            ),
            timeout=10,
            what="Warning Events on the provider and the agent",
        )
        # Several checks later: still one Event each (per transition, not per check).
        time.sleep(3 * CHECK_SECONDS)
        for name in ("fake", "helper"):
            [event] = _events(cluster, namespace, name, "Unauthorized")
            assert event["type"] == "Warning" and event.get("count", 1) == 1
            assert "sk-e2e-wrong" not in json.dumps(event)

        docs[0]["stringData"] = {"apiKey": PROVIDER_KEY}
        apply(cluster, docs[0])
        for kind, name in (("llmprovider", "fake"), ("sentientagent", "helper")):
            wait_for(_valid(cluster, kind, name, namespace), timeout=30, what=f"{kind} CredentialsValid=True")
        assert _reason(cluster, "llmprovider", "fake", namespace, "Ready") != "Unauthorized"
        assert condition(get(cluster, "sentientagent", "helper", namespace), "Degraded")["status"] == "False"

        # Revoked at the upstream, nothing changed in the cluster: the periodic check finds it.
        upstream.set_api_key("sk-e2e-upstream-rotated")
        wait_for(
            lambda: (
                _reason(cluster, "sentientagent", "helper", namespace, "CredentialsValid") == "Unauthorized"
            ),
            timeout=30,
            what="the revoked key to show on the agent",
        )
