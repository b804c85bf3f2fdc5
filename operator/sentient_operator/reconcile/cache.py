"""The operator's view of the cluster: kopf indexes and the referenced objects, read through one object.

kopf keeps every index up to date from its watch streams, so a reconcile reads
agents, providers, policies and the agents' children from memory and makes no
API request unless it has something to write. That is what keeps an idle
operator quiet. Secrets and ConfigMaps are not indexed whole: only those the
operator manages or something references are kept (see :mod:`.referenced`).
"""

from __future__ import annotations

import base64
import binascii
from collections.abc import Callable, Iterable, Iterator, Mapping
from typing import Any

import kopf

from sentient_operator.reconcile.referenced import ReferencedObjects
from sentient_operator.reconcile.snapshot import Snapshot

Key = tuple[str, str]
ChildKey = tuple[str, str, str]


def _first_snapshot(index: kopf.Index[Any, Snapshot] | None, key: Any) -> Snapshot | None:
    if index is None:
        return None
    store = index.get(key)
    if store is None:
        return None
    for value in store:
        return value
    return None


def _first(index: kopf.Index[Any, Snapshot] | None, key: Any) -> dict[str, Any] | None:
    snapshot = _first_snapshot(index, key)
    return None if snapshot is None else snapshot.load()


def decode_secret_data(secret: Mapping[str, Any]) -> dict[str, str]:
    """A Secret's ``data`` decoded to text (undecodable bytes replaced; only text is bound)."""
    decoded: dict[str, str] = {}
    for key, value in (secret.get("data") or {}).items():
        try:
            decoded[key] = base64.b64decode(value or "").decode("utf-8", errors="replace")
        except (binascii.Error, ValueError):
            continue
    for key, value in (secret.get("stringData") or {}).items():
        decoded[key] = str(value)
    return decoded


class ClusterCache:
    """Typed access to the kopf indexes registered in :mod:`sentient_operator.handlers`.

    kopf hands indexes to handlers as keyword arguments; the startup handler
    binds them here so that the reconcile workers (which run outside any single
    handler) read the same live indexes.
    """

    def __init__(self, referenced: Callable[[str, str, str], bool] | None = None) -> None:
        """``referenced(kind, namespace, name)``: whether an agent or policy references an object."""
        refs = referenced or (lambda kind, namespace, name: False)
        self.agents: kopf.Index[Key, Snapshot] | None = None
        self.providers: kopf.Index[Key, Snapshot] | None = None
        self.policies: kopf.Index[Key, Snapshot] | None = None
        self.secrets = ReferencedObjects("Secret", lambda ns, name: refs("Secret", ns, name))
        self.config_maps = ReferencedObjects("ConfigMap", lambda ns, name: refs("ConfigMap", ns, name))
        self.children: dict[str, kopf.Index[ChildKey, Snapshot]] = {}
        # (namespace, name) -> (resourceVersion, the RateLimitPolicy its spec names): counting a
        # policy's agents decodes only the agents that changed since the last count.
        self._policy_refs: dict[Key, tuple[int, Key | None]] = {}

    def bind(self, **indexes: Any) -> None:
        """Attach the kopf indexes (called from the startup handler with kopf's kwargs)."""
        self.agents = indexes.get("sentient_agents_idx")
        self.providers = indexes.get("sentient_providers_idx")
        self.policies = indexes.get("sentient_policies_idx")
        self.children = {
            name[len("sentient_children_") : -len("_idx")]: index
            for name, index in indexes.items()
            if name.startswith("sentient_children_") and name.endswith("_idx")
        }

    # ---------------------------------------------------------------- objects

    def agent(self, namespace: str, name: str) -> dict[str, Any] | None:
        """A SentientAgent body."""
        return _first(self.agents, (namespace, name))

    def agent_keys(self) -> Iterator[Key]:
        """Keys of every SentientAgent seen."""
        if self.agents is not None:
            yield from list(self.agents)

    def agents_using_policy(self, namespace: str, name: str) -> int:
        """SentientAgents whose ``spec.rateLimitPolicyRef`` names this RateLimitPolicy."""
        count, seen = 0, set()
        for key in self.agent_keys():
            snapshot = _first_snapshot(self.agents, key)
            if snapshot is None:
                continue
            seen.add(key)
            memo = self._policy_refs.get(key)
            if memo is None or memo[0] != snapshot.resource_version or not snapshot.resource_version:
                ref = (snapshot.load().get("spec") or {}).get("rateLimitPolicyRef") or {}
                named = (ref.get("namespace") or key[0], ref["name"]) if ref.get("name") else None
                memo = (snapshot.resource_version, named)
                self._policy_refs[key] = memo
            count += memo[1] == (namespace, name)
        for gone in self._policy_refs.keys() - seen:
            del self._policy_refs[gone]
        return count

    def provider(self, namespace: str, name: str) -> dict[str, Any] | None:
        """An LLMProvider body."""
        return _first(self.providers, (namespace, name))

    def policy(self, namespace: str, name: str) -> dict[str, Any] | None:
        """A RateLimitPolicy body."""
        return _first(self.policies, (namespace, name))

    def secret_object(self, namespace: str, name: str) -> dict[str, Any] | None:
        """A Secret body (data still base64-encoded)."""
        return self.secrets.get(namespace, name)

    def secret(self, namespace: str, name: str) -> dict[str, str] | None:
        """A Secret's data decoded to text."""
        obj = self.secret_object(namespace, name)
        return None if obj is None else decode_secret_data(obj)

    def config_map_object(self, namespace: str, name: str) -> dict[str, Any] | None:
        """A ConfigMap body."""
        return self.config_maps.get(namespace, name)

    def config_map(self, namespace: str, name: str) -> dict[str, str] | None:
        """A ConfigMap's data."""
        obj = self.config_map_object(namespace, name)
        return None if obj is None else dict(obj.get("data") or {})

    def child(self, kind: str, namespace: str, name: str) -> dict[str, Any] | None:
        """A child object the operator manages, by kind, namespace and name."""
        if kind == "Secret":
            return self.secret_object(namespace, name)
        if kind == "ConfigMap":
            return self.config_map_object(namespace, name)
        return _first(self.children.get(kind.lower()), (kind, namespace, name))

    def objects(self, kind: str) -> ReferencedObjects | None:
        """The store of referenced objects of ``kind`` (Secret, ConfigMap), if it has one."""
        return {"Secret": self.secrets, "ConfigMap": self.config_maps}.get(kind)

    async def load(self, refs: Iterable[tuple[str, str, str]]) -> None:
        """Read the referenced Secrets and ConfigMaps not kept yet (before a reconcile resolves them)."""
        for kind, namespace, name in refs:
            store = self.objects(kind)
            if store is not None:
                await store.load([(namespace, name)])

    def release(self, kind: str, namespace: str, name: str) -> None:
        """Nothing references the object any more."""
        store = self.objects(kind)
        if store is not None:
            store.release(namespace, name)
