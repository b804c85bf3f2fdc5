"""Drift check: what the operator believes exists, compared with the API, periodically.

kopf's indexes follow the watch streams. A watch that breaks and re-lists (after an apiserver
restart, or when its resourceVersion fell out of the watch cache) delivers the objects that
exist, but no deletion for an object that went while it was away: the index keeps a child
that no longer exists, and a reconcile that trusts it would never re-create it.

Every ``SENTIENT_DRIFT_CHECK_SECONDS`` the check LISTs the agents' children, one request per
kind and namespace, by label, from the apiserver's watch cache (``resourceVersion=0``: cheap,
no etcd read), and compares names and resourceVersions with what the operator holds. Where they
differ, the API's answer wins until the next watch event for that child
(:meth:`ChildApplier.correct`), and the agent is reconciled. When nothing drifted, nothing
else happens: no write, no reconcile.
"""

from __future__ import annotations

import logging
from collections import defaultdict
from typing import Any

from sentient_operator import kube, metrics
from sentient_operator.build.common import (
    AGENT_LABEL,
    MANAGED_BY,
    config_map_name,
    credentials_secret_name,
)
from sentient_operator.reconcile.cache import ClusterCache
from sentient_operator.reconcile.children import ChildApplier
from sentient_operator.reconcile.controller import Controller
from sentient_operator.reconcile.snapshot import resource_version_of

log = logging.getLogger("sentient_operator.drift")

#: Children of agents: the labels every one of them carries (see build/common.py).
CHILD_SELECTOR = f"app.kubernetes.io/managed-by={MANAGED_BY},app.kubernetes.io/component=agent"
#: (apiVersion, kind) of every child kind, the ServiceMonitor only where its CRD is served.
CHILD_API: dict[str, str] = {
    "ConfigMap": "v1",
    "Secret": "v1",
    "Deployment": "apps/v1",
    "Service": "v1",
    "HorizontalPodAutoscaler": "autoscaling/v2",
    "PodDisruptionBudget": "policy/v1",
    "ServiceMonitor": "monitoring.coreos.com/v1",
}


class DriftCheck:
    """Repairs the operator's view of the agents' children from a periodic, cheap LIST."""

    def __init__(self, cache: ClusterCache, children: ChildApplier, controller: Controller) -> None:
        self.cache = cache
        self.children = children
        self.controller = controller

    async def run_once(self) -> int:
        """One pass over every namespace with agents; how many agents were enqueued."""
        agents_by_ns: dict[str, set[str]] = defaultdict(set)
        for namespace, name in self.cache.agent_keys():
            agents_by_ns[namespace].add(name)
        drifted: set[tuple[str, str]] = set()
        for namespace, agents in agents_by_ns.items():
            for kind, api_version in CHILD_API.items():
                if kind == "ServiceMonitor" and not await kube.discovery.service_monitors():
                    continue
                live = await kube.list_objects(
                    api_version, kind, namespace, label_selector=CHILD_SELECTOR, cached=True
                )
                drifted |= self._compare(kind, namespace, agents, live)
        for namespace, agent in sorted(drifted):
            metrics.RECONCILE_ERRORS.labels("SentientAgent", "Drift").inc()
            self.controller.enqueue("agent", namespace, agent)
        if drifted:
            log.warning(
                "drift: %d agent(s) had children that differ from what the watch reported", len(drifted)
            )
        return len(drifted)

    def _compare(
        self, kind: str, namespace: str, agents: set[str], live: list[dict[str, Any]]
    ) -> set[tuple[str, str]]:
        drifted: set[tuple[str, str]] = set()
        live_by_name = {obj["metadata"]["name"]: obj for obj in live}
        for agent in agents:
            for name in _child_names(kind, agent):
                believed = self.children.live(kind, namespace, name)
                actual = live_by_name.get(name)
                if believed is None and actual is None:
                    continue
                if (
                    believed is not None
                    and actual is not None
                    and resource_version_of(believed) >= resource_version_of(actual)
                ):
                    continue  # the same object (or our newer write), as far as anyone can tell
                owner = ((actual or believed or {}).get("metadata", {}).get("labels") or {}).get(AGENT_LABEL)
                if believed is not None and actual is None and owner != agent:
                    continue  # not this agent's (a user's object of the same name): not ours to judge
                self.children.correct(kind, namespace, name, actual)
                drifted.add((namespace, agent))
        return drifted


def _child_names(kind: str, agent: str) -> list[str]:
    if kind == "ConfigMap":
        return [config_map_name(agent)]
    if kind == "Secret":
        return [credentials_secret_name(agent)]
    return [agent]
