"""Which agent status writes may wait, and for how long (pure: no cluster)."""

import json
from typing import Any

from sentient_operator import kube
from sentient_operator.reconcile.agent_status import StatusHold, apply_error_message, hold_reason


def deployment(generation: int, observed: int) -> dict[str, Any]:
    return {"metadata": {"generation": generation}, "status": {"observedGeneration": observed}}


def cond(type_: str, status: str, reason: str, message: str = "", generation: int = 1) -> dict[str, Any]:
    return {
        "type": type_,
        "status": status,
        "reason": reason,
        "message": message,
        "observedGeneration": generation,
    }


def status(*conditions: dict[str, Any], config_hash: str = "h1", replicas: int = 1) -> dict[str, Any]:
    return {
        "observedGeneration": 1,
        "conditions": list(conditions),
        "replicas": replicas,
        "configHash": config_hash,
    }


def test_a_deployment_its_controller_has_not_observed_holds_the_write() -> None:
    new = status(cond("Ready", "False", "RolloutInProgress"), config_hash="h2")
    assert hold_reason(deployment(2, 1), {}, new) == ("unobserved", 2)
    assert hold_reason(deployment(2, 2), {}, new) is None  # observed: real news, written at once


def test_only_pod_counts_moving_is_progress() -> None:
    old = status(cond("Ready", "True", "RolloutInProgress", "0/3 pods updated"), replicas=3)
    counted = status(cond("Ready", "True", "RolloutInProgress", "1/3 pods updated"), replicas=4)
    assert hold_reason(deployment(2, 2), old, counted) == ("progress",)
    finished = status(cond("Ready", "True", "Available", "3/3 pods ready"), replicas=3)
    assert hold_reason(deployment(2, 2), old, finished) is None  # a reason changed
    new_hash = status(cond("Ready", "True", "RolloutInProgress", "1/3 pods updated"), config_hash="h3")
    assert hold_reason(deployment(2, 2), old, new_hash) is None  # more than progress changed
    assert hold_reason(deployment(2, 2), old, old) is None  # nothing to write


def test_a_hold_lasts_its_seconds_then_the_next_one_starts_afresh() -> None:
    hold = StatusHold({"progress": 10.0, "unobserved": 10.0})
    key = ("team", "a")
    assert hold.delay(key, ("progress",), now=100.0) == 10.0
    assert hold.delay(key, ("progress",), now=104.0) == 6.0
    assert hold.delay(key, ("progress",), now=110.5) is None  # held long enough: write
    assert hold.delay(key, ("progress",), now=111.0) == 10.0  # a later change waits again
    assert hold.delay(key, ("unobserved", 3), now=112.0) == 10.0  # another reason: its own hold
    assert hold.delay(key, None, now=113.0) is None and len(hold) == 0  # news: written at once
    hold.delay(key, ("progress",), now=114.0)
    hold.forget(key)
    assert len(hold) == 0


def test_each_reason_has_its_own_longest_hold() -> None:
    hold = StatusHold({"progress": 30.0, "unobserved": 10.0})
    assert hold.delay(("team", "a"), ("progress",), now=0.0) == 30.0
    assert hold.delay(("team", "b"), ("unobserved", 2), now=0.0) == 10.0
    assert hold.delay(("team", "b"), ("unobserved", 2), now=10.0) is None


def test_status_unchanged_compares_only_the_fields_written() -> None:
    from sentient_operator.conditions import status_unchanged

    old = {"replicas": 1, "configHash": "h1", "lastSyncTime": "t1", "extra": "kept"}
    assert status_unchanged(old, {"replicas": 1, "configHash": "h1"})
    assert not status_unchanged(old, {"replicas": 2})
    assert status_unchanged(old, {"replicas": 1, "lastSyncTime": "t2"}, frozenset({"lastSyncTime"}))


def test_apply_error_names_kind_and_fields_never_values() -> None:
    refused = {
        "kind": "Status",
        "status": "Failure",
        "reason": "Invalid",
        "message": 'Secret "a-credentials" is invalid: data[sk-live-123]: Invalid value: "sk-live-123"',
        "details": {
            "name": "a-credentials",
            "kind": "Secret",
            "causes": [
                {
                    "reason": "FieldValueInvalid",
                    "message": 'Invalid value: "sk-live-123"',
                    "field": "data[x y]",
                },
                {"reason": "FieldValueInvalid", "message": "again", "field": "data[x y]"},
            ],
        },
    }
    text = apply_error_message(kube._error(422, "Unprocessable Entity", json.dumps(refused).encode()))
    assert text == "apply failed: 422 Invalid: Secret field data[x y]"
    assert apply_error_message(kube._error(500, "Internal Server Error", b"")) == (
        "apply failed: 500 Internal Server Error"
    )
