"""What an agent says while its provider's credential is not bound (issue 15, item 8).

- created together with a healthy provider: no Warning ``CredentialsNotReady`` (the provider's
  first sync is a moment of waiting, not a fault);
- a provider whose Secret does not exist: the agent names the Secret the user wrote, not the
  operator's internal ``sentient-provider-*`` Secret, and the Warning Event is there.
"""

from __future__ import annotations

import json
from typing import Any

from e2e.agents import agent, callers, provider, wait_ready
from e2e.operator_proc import running_operator
from e2e.resources import apply, condition, events, get
from tests.support.waiting import wait_for

ENDPOINT = "http://127.0.0.1:9/v1"


def _agent_events(cluster: Any, namespace: str, reason: str) -> list[dict[str, Any]]:
    return events(cluster, namespace, f"involvedObject.kind=SentientAgent,reason={reason}")


def test_healthy_create_has_no_credentials_warning(cluster: Any, crds: list[str], namespace: str) -> None:
    # Applied before the operator starts (as after an operator restart, or a demo applying
    # everything at once): the agent is reconciled before its provider's first sync is done.
    apply(cluster, *provider(namespace, ENDPOINT), callers(namespace), agent(namespace))
    with running_operator(cluster, namespace) as op:
        wait_ready(cluster, namespace)
        # Events are posted before the status that follows them: Ready means they are all in.
        op.wait_for_log("Ready=True", timeout=30)
        assert _agent_events(cluster, namespace, "CredentialsNotReady") == []
        assert _agent_events(cluster, namespace, "CredentialsPending") == []


def test_missing_provider_secret_is_named_as_the_user_wrote_it(
    cluster: Any, crds: list[str], namespace: str
) -> None:
    with running_operator(cluster, namespace):
        docs = provider(namespace, ENDPOINT)
        docs[1]["spec"]["credentials"]["secretRef"]["name"] = "nosecret"
        apply(cluster, docs[1], callers(namespace), agent(namespace))
        obj = wait_for(
            lambda: (
                (o := get(cluster, "sentientagent", "helper", namespace))
                and condition(o, "CredentialsReady").get("reason") == "CredentialsNotReady"
                and o
            ),
            timeout=60,
            what="CredentialsReady=False/CredentialsNotReady",
        )
        message = condition(obj, "CredentialsReady")["message"]
        assert f"Secret {namespace}/nosecret not found" in message, message
        assert "sentient-provider-" not in json.dumps(obj.get("status"))
        [event] = wait_for(
            lambda: _agent_events(cluster, namespace, "CredentialsNotReady"), timeout=30, what="the Event"
        )
        assert event["type"] == "Warning" and "nosecret" in event["message"]
        assert "sentient-provider-" not in event["message"]
