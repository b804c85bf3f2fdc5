"""Pieces of the agent handler that need no cluster: drift comparison, rollout state, the queue."""

from __future__ import annotations

import asyncio
from typing import Any

from sentient_operator.conditions import make_condition
from sentient_operator.reconcile.agent_status import deployment_state, transition_events_for
from sentient_operator.reconcile.children import contains
from sentient_operator.reconcile.queue import WorkQueue


def test_contains_ignores_server_added_fields() -> None:
    desired = {"spec": {"ports": [{"name": "http", "port": 80}], "type": "ClusterIP"}}
    live = {
        "spec": {
            "ports": [{"name": "http", "port": 80, "protocol": "TCP"}],
            "type": "ClusterIP",
            "clusterIP": "10.0.0.1",
        }
    }
    assert contains(live, desired)


def test_contains_sees_edits_and_removals() -> None:
    desired = {"spec": {"replicas": 2, "ports": [{"port": 80}]}}
    assert not contains({"spec": {"replicas": 3, "ports": [{"port": 80}]}}, desired)
    assert not contains({"spec": {"replicas": 2, "ports": []}}, desired)
    assert not contains({"spec": {"ports": [{"port": 80}]}}, desired)


def dep(
    generation: int = 1, observed: int = 1, replicas: int = 1, updated: int = 1, ready: int = 1
) -> dict[str, object]:
    return {
        "metadata": {"generation": generation},
        "status": {
            "observedGeneration": observed,
            "replicas": replicas,
            "updatedReplicas": updated,
            "readyReplicas": ready,
            "availableReplicas": ready,
        },
    }


def testdeployment_state() -> None:
    assert deployment_state(None, 1)[:3] == (False, True, "DeploymentMissing")
    assert deployment_state(dep(), 1)[:3] == (True, False, "Available")
    # A new spec not yet observed: still Ready while the old pods serve (a rollout with
    # maxUnavailable 0 never takes the agent out), not Ready when they do not.
    assert deployment_state(dep(generation=2), 1)[:3] == (True, True, "RolloutInProgress")
    assert deployment_state(dep(generation=2, ready=0), 1)[:3] == (False, True, "RolloutInProgress")
    assert deployment_state(dep(generation=2), 2)[:3] == (False, True, "RolloutInProgress")
    assert deployment_state(dep(replicas=2, updated=1, ready=1), 1)[:3] == (True, True, "RolloutInProgress")
    assert deployment_state(dep(replicas=2, updated=1), 1)[2] == "RolloutInProgress"
    assert deployment_state(dep(ready=0), 1)[:3] == (False, True, "PodsNotReady")
    assert deployment_state(dep(replicas=0, updated=0, ready=0), 0)[:3] == (True, False, "Available")


def test_events_are_those_a_status_change_calls_for() -> None:
    """One Event per transition that is announced; a new agent's first Ready=False is none (the
    Event-write counter used to count it all the same: two per Event sent)."""
    first = [make_condition("Ready", False, "DeploymentMissing", "being created", 1)]
    assert transition_events_for([], first) == []
    ready = [make_condition("Ready", True, "Available", "1/1 pods ready", 1)]
    assert transition_events_for(first, ready) == [("Ready", "1/1 pods ready", "Normal")]
    assert transition_events_for(ready, ready) == []
    # A rollout that keeps pods available: Ready stays True, a new reason is no Event.
    rolling = [make_condition("Ready", True, "RolloutInProgress", "0/1 pods updated", 1)]
    assert transition_events_for(ready, rolling) == []
    assert transition_events_for(rolling, ready) == []
    lost = [make_condition("Ready", False, "PodsNotReady", "0/1 pods ready", 1)]
    assert transition_events_for(ready, lost) == [("NotReady", "0/1 pods ready", "Warning")]


async def test_queue_coalesces_and_serialises_keys() -> None:
    queue: WorkQueue[str] = WorkQueue()
    for _ in range(5):
        queue.add("a")
    queue.add("b", delay=0.05)
    assert len(queue) == 2
    first = await queue.get()
    assert first == "a"
    queue.add("a")  # re-added while being worked on: not handed out twice at once
    second = await asyncio.wait_for(queue.get(), timeout=5)
    assert second == "b"
    queue.done("a")
    third = await asyncio.wait_for(queue.get(), timeout=5)
    assert third == "a"
    queue.done("a")
    queue.done("b")
    assert len(queue) == 0


async def test_queue_hands_out_keys_by_due_time_and_an_earlier_add_wins() -> None:
    queue: WorkQueue[int] = WorkQueue()
    for key in range(200):
        # The last added is due first; 5 ms apart, so that a preempted add (a loaded machine)
        # cannot reorder neighbours.
        queue.add(key, delay=0.005 * (200 - key))
    queue.add(150, delay=10.0)  # later than scheduled: the earlier schedule stands
    queue.add(199, delay=10.0)
    queue.add(5, delay=0.0)  # earlier: moves to the front
    order = []
    for _ in range(200):
        key = await asyncio.wait_for(queue.get(), timeout=5)
        order.append(key)
        queue.done(key)
    assert order[0] == 5 and sorted(order) == list(range(200))
    rest = order[1:]
    assert rest == sorted(rest, reverse=True)  # by due time: higher keys were due sooner
    assert len(queue) == 0
    queue.add(7, delay=0.05)
    queue.add(8)
    assert await asyncio.wait_for(queue.get(), timeout=5) == 8
    assert await asyncio.wait_for(queue.get(), timeout=5) == 7  # waited for its due time


def test_ready_gauges_follow_each_agent_without_a_rebuild() -> None:
    from prometheus_client import REGISTRY

    from sentient_operator.reconcile.agent_status import ReadyGauges

    def sample(name: str, **labels: str) -> float | None:
        return REGISTRY.get_sample_value(name, labels)

    gauges = ReadyGauges()
    gauges.set("gauge-ns", "a", False)
    gauges.set("gauge-ns", "b", True)
    gauges.set("gauge-ns", "b", True)  # a repeat changes nothing
    assert sample("sentient_operator_managed_agents") == 2
    assert sample("sentient_operator_ready_agents") == 1
    gauges.set("gauge-ns", "a", True)
    assert sample("sentient_operator_ready_agents") == 2
    assert sample("sentient_operator_agent_ready", namespace="gauge-ns", agent="a") == 1
    gauges.remove("gauge-ns", "a")
    gauges.remove("gauge-ns", "a")  # twice: no error, no double count
    assert sample("sentient_operator_agent_ready", namespace="gauge-ns", agent="a") is None
    assert sample("sentient_operator_managed_agents") == 1
    assert sample("sentient_operator_ready_agents") == 1
    gauges.set("gauge-ns", "b", False)
    assert sample("sentient_operator_ready_agents") == 0


def _context() -> object:
    from sentient_operator.reconcile.context import OperatorContext
    from sentient_operator.settings import Settings

    return OperatorContext(Settings())


def test_the_echo_of_our_own_apply_schedules_no_reconcile() -> None:
    from sentient_operator.handlers import agent as handlers
    from sentient_operator.reconcile.context import OperatorContext
    from tests.support.kopf_calls import as_kopf_calls

    on_child_event = as_kopf_calls(handlers.on_child_event)  # called as kopf would, with plain dicts

    context = _context()
    assert isinstance(context, OperatorContext)
    memo = {"sentient": context}
    labels = {"sentient.dev/agent": "helper"}
    applied = {"kind": "Deployment", "metadata": {"name": "helper", "resourceVersion": "41"}}
    context.children.memo.remember("Deployment", "team", "helper", "hash-1", applied)
    key = ("agent", "team", "helper")

    on_child_event(type="ADDED", labels=labels, namespace="team", name="helper", body=applied, memo=memo)
    assert not context.controller.queue.pending(key)
    # Anything newer (the Deployment controller's status), or its deletion, is news.
    status_update = {"kind": "Deployment", "metadata": {"name": "helper", "resourceVersion": "42"}}
    on_child_event(
        type="MODIFIED", labels=labels, namespace="team", name="helper", body=status_update, memo=memo
    )
    assert context.controller.queue.pending(key)
    context = _context()
    assert isinstance(context, OperatorContext)
    context.children.memo.remember("Deployment", "team", "helper", "hash-1", applied)
    on_child_event(
        type="DELETED",
        labels=labels,
        namespace="team",
        name="helper",
        body=applied,
        memo={"sentient": context},
    )
    assert context.controller.queue.pending(key)


def test_the_echo_of_our_own_status_write_schedules_no_reconcile() -> None:
    from sentient_operator.handlers import agent as handlers
    from sentient_operator.reconcile.context import OperatorContext
    from tests.support.kopf_calls import as_kopf_calls

    on_agent_event = as_kopf_calls(handlers.on_agent_event)  # called as kopf would, with plain dicts

    context = _context()
    assert isinstance(context, OperatorContext)
    memo = {"sentient": context}
    key = ("agent", "team", "helper")
    context.agents._written.record("team", "helper", "7")
    for rv, scheduled in (("7", False), ("8", True)):  # our write's echo, then someone else's
        body = {"metadata": {"resourceVersion": rv}}
        on_agent_event(type="MODIFIED", namespace="team", name="helper", body=body, memo=memo)
        assert context.controller.queue.pending(key) is scheduled


def test_the_render_memo_renders_what_render_config_does_and_again_only_on_a_change() -> None:
    from dataclasses import replace

    from sentient_operator.build import render_config
    from sentient_operator.reconcile.agent import _RenderMemo
    from tests.test_build_children import make_inputs

    memo = _RenderMemo()
    inputs = make_inputs()
    first = memo.render(inputs)
    assert first == render_config(inputs)
    assert memo.render(make_inputs()) is first  # the same config: the remembered text
    changed = replace(inputs, system_prompt="You are verbose.")
    assert memo.render(changed) == render_config(changed) != first
    memo.forget(inputs.namespace, inputs.name)
    assert memo.render(inputs) == first


def test_kopf_keeps_no_diff_essence_for_our_event_handlers() -> None:
    from sentient_operator.main import NoDiffBase, kopf_settings
    from sentient_operator.settings import Settings

    settings = kopf_settings(Settings())
    assert isinstance(settings.persistence.diffbase_storage, NoDiffBase)
    body = {"metadata": {"name": "a"}, "spec": {"big": "x" * 1000}}
    storage: Any = settings.persistence.diffbase_storage
    assert storage.build(body=body) == {}
    assert storage.fetch(body=body) is None
