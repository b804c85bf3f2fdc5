"""Applying an agent's children: write only what differs from the live state.

The live state is read from kopf's indexes (see :class:`ClusterCache`), or from the object our
own last write returned while the watch has not delivered it yet. What the operator last applied
is remembered per child, so that apiserver-side normalisation (defaults, quantities) never makes
it re-send an unchanged object. Both memories are pruned when the child or its agent goes.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Mapping
from typing import Any

from sentient_operator import kube, metrics
from sentient_operator.build.common import AGENT_LABEL, DESIRED_HASH_ANNOTATION
from sentient_operator.reconcile.cache import ClusterCache
from sentient_operator.reconcile.snapshot import Snapshot, resource_version_of

log = logging.getLogger("sentient_operator.agent")

ChildKey = tuple[str, str, str]


def contains(live: Any, desired: Any) -> bool:
    """Whether every field of ``desired`` has the same value in ``live`` (extra live fields allowed)."""
    if isinstance(desired, dict):
        return isinstance(live, dict) and all(k in live and contains(live[k], v) for k, v in desired.items())
    if isinstance(desired, list):
        return (
            isinstance(live, list)
            and len(live) == len(desired)
            and all(contains(a, b) for a, b in zip(live, desired, strict=True))
        )
    return bool(live == desired)


class ChildMemo:
    """What the operator last applied: desired hash -> resourceVersion the apply produced.

    When the live object still has that resourceVersion nothing touched it
    since, so apiserver-side normalisation (defaults, quantities) cannot make
    the operator re-send an unchanged object.
    """

    def __init__(self) -> None:
        self._applied: dict[ChildKey, tuple[str, str]] = {}

    def __len__(self) -> int:
        return len(self._applied)

    def remember(self, kind: str, namespace: str, name: str, desired_hash: str, live: dict[str, Any]) -> None:
        """Record an apply's result."""
        rv = str(live.get("metadata", {}).get("resourceVersion", ""))
        self._applied[(kind, namespace, name)] = (desired_hash, rv)

    def unchanged(
        self, kind: str, namespace: str, name: str, desired_hash: str, live: dict[str, Any]
    ) -> bool:
        """Whether ``live`` is exactly what our last apply of ``desired_hash`` left."""
        memo = self._applied.get((kind, namespace, name))
        rv = str(live.get("metadata", {}).get("resourceVersion", ""))
        return memo is not None and memo == (desired_hash, rv)

    def forget(self, kind: str, namespace: str, name: str) -> None:
        """Forget an object (deleted)."""
        self._applied.pop((kind, namespace, name), None)

    def made(self, kind: str, namespace: str, name: str, resource_version: str) -> bool:
        """Whether ``resource_version`` is the one our last apply of the object produced."""
        memo = self._applied.get((kind, namespace, name))
        return memo is not None and bool(resource_version) and memo[1] == resource_version


class ChildApplier:
    """Server-side apply of desired children, skipped when the live object already matches."""

    def __init__(self, cache: ClusterCache) -> None:
        self.cache = cache
        self.memo = ChildMemo()
        # Newest object returned by our own writes, until the watch delivers it into the index.
        self._fresh: dict[ChildKey, Snapshot] = {}
        # The API's answer where a drift check found the index wrong, until the next watch event.
        self._corrected: dict[ChildKey, Snapshot | None] = {}
        # Which children each agent has had applied, so that its memories go with it.
        self._by_agent: dict[tuple[str, str], set[ChildKey]] = {}

    def seen(
        self,
        kind: str,
        namespace: str | None,
        name: str,
        body: Mapping[str, Any] | None = None,
        event_type: str | None = None,
    ) -> bool:
        """A watch event for a child arrived: the index is authoritative again (also after a deletion).

        True when the event is the echo of our own last apply (the object exactly as that write
        left it): the agent already knows that state and needs no reconcile for it.
        """
        self._fresh.pop((kind, namespace or "", name), None)
        self._corrected.pop((kind, namespace or "", name), None)
        if body is None or event_type == "DELETED":
            return False
        rv = str((body.get("metadata") or {}).get("resourceVersion", ""))
        return self.memo.made(kind, namespace or "", name, rv)

    def correct(self, kind: str, namespace: str, name: str, actual: dict[str, Any] | None) -> None:
        """The API says the child is ``actual`` (None: gone), whatever the index holds."""
        self._fresh.pop((kind, namespace, name), None)
        self._corrected[(kind, namespace, name)] = None if actual is None else Snapshot(actual)

    def live(self, kind: str, namespace: str, name: str) -> dict[str, Any] | None:
        """The freshest known state of a child: the index, our own newer write, or a drift correction."""
        key = (kind, namespace, name)
        if key in self._corrected and key not in self._fresh:
            corrected = self._corrected[key]
            return None if corrected is None else corrected.load()
        indexed = self.cache.child(kind, namespace, name)
        fresh = self._fresh.get(key)
        if fresh is not None and (indexed is None or fresh.resource_version > resource_version_of(indexed)):
            return fresh.load()
        if fresh is not None:
            self._fresh.pop(key, None)
        return indexed

    async def ensure(self, desired: dict[str, Any]) -> str | None:
        """Apply ``desired`` unless the live object already matches: ``created`` or ``updated``
        when a write was sent, else None."""
        kind = desired["kind"]
        meta = desired["metadata"]
        namespace, name = meta["namespace"], meta["name"]
        desired_hash = meta["annotations"][DESIRED_HASH_ANNOTATION]
        live = self.live(kind, namespace, name)
        if live is not None and (
            self.memo.unchanged(kind, namespace, name, desired_hash, live) or contains(live, desired)
        ):
            return None
        result = await kube.apply(desired)
        metrics.WRITES.labels("apply", kind).inc()
        self.memo.remember(kind, namespace, name, desired_hash, result)
        self._fresh[(kind, namespace, name)] = Snapshot(result)
        self._corrected.pop((kind, namespace, name), None)
        agent = (meta.get("labels") or {}).get(AGENT_LABEL)
        if agent:
            self._by_agent.setdefault((namespace, agent), set()).add((kind, namespace, name))
        return "created" if live is None else "updated"

    async def ensure_all(self, wanted: list[dict[str, Any]]) -> None:
        """Apply an agent's children: what its pods mount first, then the workload, each group's
        objects at once (a reconcile waits for two round trips, not one per child).

        A Deployment goes out only after its ConfigMap and Secret were written, so that its new
        pods never start on an old config; the first :class:`kube.KubeError` is raised once every
        write of its group has ended. The writes sent are logged in one line per call.
        """
        first = [obj for obj in wanted if obj["kind"] != "Deployment"]
        then = [obj for obj in wanted if obj["kind"] == "Deployment"]
        written: list[str] = []
        try:
            for group in (first, then):
                results = await asyncio.gather(*(self.ensure(obj) for obj in group), return_exceptions=True)
                for obj, result in zip(group, results, strict=True):
                    if isinstance(result, str):
                        written.append(f"{obj['kind']} ({result})")
                for result in results:
                    if isinstance(result, BaseException):
                        raise result
        finally:
            if written:
                meta = wanted[0]["metadata"]
                agent = (meta.get("labels") or {}).get(AGENT_LABEL) or meta["name"]
                log.info("applied %s/%s: %s", meta["namespace"], agent, ", ".join(written))

    async def remove_unwanted(self, namespace: str, agent: str, api_version: str, kind: str) -> None:
        """Delete an optional child the agent no longer wants (e.g. its HPA), if it is ours."""
        live = self.live(kind, namespace, agent)
        if live is None or (live.get("metadata", {}).get("labels") or {}).get(AGENT_LABEL) != agent:
            return
        await kube.delete(api_version, kind, agent, namespace)
        metrics.WRITES.labels("delete", kind).inc()
        self.forget(kind, namespace, agent)

    def forget(self, kind: str, namespace: str, name: str) -> None:
        """Drop what is remembered about one child."""
        self.memo.forget(kind, namespace, name)
        self._fresh.pop((kind, namespace, name), None)
        self._corrected.pop((kind, namespace, name), None)

    def forget_agent(self, namespace: str, agent: str) -> None:
        """Drop what is remembered about every child of a deleted agent."""
        for kind, child_ns, name in self._by_agent.pop((namespace, agent), set()):
            self.forget(kind, child_ns, name)
