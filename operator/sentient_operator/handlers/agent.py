"""SentientAgent handlers: the indexes the reconcilers read, and events routed to the work queue.

Every watch event only enqueues the affected agent; the work is
:class:`sentient_operator.reconcile.agent.AgentReconciler`.
"""

from __future__ import annotations

from typing import Any

import kopf

from sentient_operator import kube
from sentient_operator.api.v1alpha1 import GROUP, VERSION
from sentient_operator.build.common import AGENT_LABEL, MANAGED_BY
from sentient_operator.reconcile.context import context_of
from sentient_operator.reconcile.snapshot import Snapshot

MANAGED = {"app.kubernetes.io/managed-by": MANAGED_BY}
CHILD_KINDS = {
    "Deployment": "apps/v1",
    "Service": "v1",
    "HorizontalPodAutoscaler": "autoscaling/v2",
    "PodDisruptionBudget": "policy/v1",
    "ServiceMonitor": "monitoring.coreos.com/v1",
}
# A short delay coalesces the burst of events one change causes (child, status, Deployment).
COALESCE = 0.2
# A Deployment's status moves through several states within a second or so of a rollout
# (replicas, updated, ready, available): one reconcile for the burst, not a status write per step.
CHILD_COALESCE = 1.0


def _copy(body: kopf.Body) -> Snapshot:
    # Indexes hold compact copies (kopf reuses its bodies), read through ClusterCache.
    return Snapshot(body)


# --------------------------------------------------------------------------- indexes


@kopf.index(GROUP, VERSION, "sentientagents")
async def sentient_agents_idx(namespace: str | None, name: str, body: kopf.Body, **_: Any) -> dict[Any, Any]:
    """SentientAgents by (namespace, name)."""
    return {(namespace, name): _copy(body)}


@kopf.index(GROUP, VERSION, "llmproviders")
async def sentient_providers_idx(
    namespace: str | None, name: str, body: kopf.Body, **_: Any
) -> dict[Any, Any]:
    """LLMProviders by (namespace, name)."""
    return {(namespace, name): _copy(body)}


def _child_index(kind: str) -> Any:
    async def index(namespace: str | None, name: str, body: kopf.Body, **_: Any) -> dict[Any, Any]:
        return {(kind, namespace, name): _copy(body)}

    index.__name__ = f"sentient_children_idx_{kind.lower()}"
    return index


def _register_children() -> None:
    for kind, api_version in CHILD_KINDS.items():
        group, _, version = api_version.rpartition("/")
        plural = kube.KNOWN_KINDS[(api_version, kind)].plural
        index_id = f"sentient_children_{kind.lower()}_idx"
        kopf.index(group, version, plural, labels=MANAGED, id=index_id)(_child_index(kind))
        kopf.on.event(group, version, plural, labels=MANAGED, id=f"child-{kind.lower()}")(on_child_event)


# --------------------------------------------------------------------------- events -> queue


async def on_child_event(
    type: str | None,
    labels: kopf.Labels,
    namespace: str | None,
    name: str,
    body: kopf.Body,
    memo: kopf.Memo,
    **_: Any,
) -> None:
    """A child changed or went: its agent re-checks it (not for the echo of our own apply)."""
    context = context_of(memo)
    if context.children.seen(str(body.get("kind", "")), namespace, name, body, type):
        return
    agent = labels.get(AGENT_LABEL)
    if agent and namespace:
        context.controller.enqueue("agent", namespace, agent, CHILD_COALESCE)


@kopf.on.event(GROUP, VERSION, "sentientagents", id="agent")
async def on_agent_event(
    type: str | None, namespace: str | None, name: str, body: kopf.Body, memo: kopf.Memo, **_: Any
) -> None:
    """Any change of an agent (or the initial listing) schedules its reconcile, except the echo of
    the operator's own status write (nothing in it is news)."""
    if not namespace:
        return
    context = context_of(memo)
    rv = body.get("metadata", {}).get("resourceVersion")
    if type != "DELETED" and context.agents.is_own_write(namespace, name, rv):
        return
    context.controller.enqueue("agent", namespace, name)


@kopf.on.event(GROUP, VERSION, "llmproviders", id="agent-provider-ref")
async def on_provider_event(namespace: str | None, name: str, memo: kopf.Memo, **_: Any) -> None:
    """A provider changed: its agents re-render (chain settings, allowedNamespaces, status)."""
    if namespace:
        context_of(memo).controller.enqueue_referrers(("LLMProvider", namespace, name), COALESCE)


@kopf.on.event("apiextensions.k8s.io", "v1", "customresourcedefinitions", id="agent-crds")
async def on_crd_event(name: str, memo: kopf.Memo, **_: Any) -> None:
    """The ServiceMonitor CRD came or went: re-check discovery and every agent."""
    if name == "servicemonitors.monitoring.coreos.com":
        kube.discovery.invalidate()
        context = context_of(memo)
        for namespace, agent in context.cache.agent_keys():
            context.controller.enqueue("agent", namespace, agent, COALESCE)


_register_children()
