"""A stale view of an agent's children is repaired by the drift check, against a real apiserver.

A watch that re-lists after a gap reports what exists but not what was deleted meanwhile, so
kopf's index can keep a child that is gone. Here the operator's parts run in this process (as
``main`` builds them) against the local control plane, with the index filled as the watch would
have filled it; a Service is then deleted behind its back. A reconcile that trusts the index
leaves it missing; one drift-check pass (a LIST per kind) notices, and the next reconcile
re-creates it.
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from typing import Any

import pytest

from e2e.agents import agent, callers, keyless_provider
from e2e.resources import apply, get
from sentient_operator import kube
from sentient_operator.reconcile.agent import STATUS_HOLD
from sentient_operator.reconcile.context import OperatorContext
from sentient_operator.reconcile.snapshot import Snapshot
from sentient_operator.settings import Settings


@pytest.fixture
def api(cluster: Any, monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    """The operator's process-wide API connection, pointed at the test cluster."""
    monkeypatch.setenv("KUBECONFIG", str(cluster.kubeconfig))
    kube.configure(kube.login())
    try:
        yield
    finally:
        kube.configure(None)


def _body(cluster: Any, kind: str, name: str, namespace: str) -> dict[str, Any]:
    obj = get(cluster, kind, name, namespace)
    assert obj is not None, f"{kind} {namespace}/{name} missing"
    return obj


def test_drift_check_repairs_a_child_the_index_still_holds(
    cluster: Any, crds: list[str], namespace: str, api: None
) -> None:
    apply(cluster, keyless_provider(namespace), callers(namespace), agent(namespace))
    context = OperatorContext(Settings(operator_namespace=namespace, leader_election=False))
    cache = context.cache
    # kopf's indexes map a key to a store of values; a dict of lists reads the same.
    agent_body = Snapshot(_body(cluster, "sentientagent", "helper", namespace))
    cache.agents = {(namespace, "helper"): [agent_body]}  # type: ignore[assignment]
    cache.providers = {(namespace, "fake"): [Snapshot(_body(cluster, "llmprovider", "fake", namespace))]}  # type: ignore[assignment]
    services: dict[Any, list[Snapshot]] = {}
    cache.children = {"service": services}  # type: ignore[dict-item]

    async def scenario() -> None:
        try:
            await steps()
        finally:
            await kube.close()

    async def steps() -> None:
        # First reconcile: the children are created (the API-key Secret is read on demand).
        # Nothing blocks it; the status at most waits for the Deployment controller (STATUS_HOLD).
        assert await context.agents.reconcile(namespace, "helper") in (None, STATUS_HOLD["unobserved"])
        service = _body(cluster, "service", "helper", namespace)
        # The watch delivers the Service into the index, then the Service is deleted and the
        # watch (re-listing after a gap) never says so.
        services[("Service", namespace, "helper")] = [Snapshot(service)]
        context.children.seen("Service", namespace, "helper")
        cluster.kubectl("delete", "service", "helper", "-n", namespace)
        assert get(cluster, "service", "helper", namespace) is None

        # Trusting the index, a reconcile sees nothing to do.
        await context.agents.reconcile(namespace, "helper")
        assert get(cluster, "service", "helper", namespace) is None

        # One drift-check pass: the agent is queued and its Service is known to be gone.
        assert await context.drift.run_once() >= 1
        assert context.controller.queue.pending(("agent", namespace, "helper"))
        assert context.children.live("Service", namespace, "helper") is None

        # The next reconcile puts it back.
        await context.agents.reconcile(namespace, "helper")
        restored = _body(cluster, "service", "helper", namespace)
        assert restored["metadata"]["uid"] != service["metadata"]["uid"]

        # Nothing drifted since: the Service the API lists is the one held, and is left alone.
        services[("Service", namespace, "helper")] = [Snapshot(restored)]
        context.children.seen("Service", namespace, "helper")
        await context.drift.run_once()
        assert context.children.live("Service", namespace, "helper") == Snapshot(restored).load()
        await context.agents.reconcile(namespace, "helper")
        after = _body(cluster, "service", "helper", namespace)
        assert after["metadata"]["resourceVersion"] == restored["metadata"]["resourceVersion"]

    asyncio.run(scenario())
