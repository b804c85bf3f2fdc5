r"""Secrets and ConfigMaps the operator needs, and only those.

The operator watches every Secret and ConfigMap of the namespaces it serves (a reference names
an object, and no label or field selector can select a set of names), but keeps in memory only:

- the objects it manages (label ``app.kubernetes.io/managed-by=sentient-operator``): bound
  Secrets, agents' ConfigMaps, provider Secrets; one or two per agent or provider;
- the objects an agent or a policy references (an API-key Secret, a Redis address, a
  systemPromptFrom ConfigMap), as recorded by the controller after each reconcile.

An object that becomes referenced after its watch event went by is read once from the API
(:meth:`ReferencedObjects.load`) and kept up to date by the watch from then on; an object no
longer referenced by anyone is dropped. Copies are :class:`~.snapshot.Snapshot`\ s: compact, and without
``metadata.managedFields``, the largest part of most objects.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping
from typing import Any

from sentient_operator import kube
from sentient_operator.build.common import MANAGED_BY
from sentient_operator.reconcile.snapshot import Snapshot, resource_version_of

Key = tuple[str, str]
MANAGED_BY_LABEL = "app.kubernetes.io/managed-by"


def managed(labels: Mapping[str, str] | None) -> bool:
    """Whether an object carries the operator's managed-by label."""
    return (labels or {}).get(MANAGED_BY_LABEL) == MANAGED_BY


class ReferencedObjects:
    """Objects of one kind (``Secret`` or ``ConfigMap``) kept because something needs them.

    ``referenced(namespace, name)`` says whether an agent or policy references the object now.
    """

    def __init__(self, kind: str, referenced: Callable[[str, str], bool]) -> None:
        self.kind = kind
        self._referenced = referenced
        self._objects: dict[Key, Snapshot] = {}
        # resourceVersion of recent deletions: a read that raced a deletion must not resurrect it.
        self._deleted: dict[Key, int] = {}

    def __len__(self) -> int:
        return len(self._objects)

    def get(self, namespace: str, name: str) -> dict[str, Any] | None:
        """The object, if it is kept (a copy)."""
        snapshot = self._objects.get((namespace, name))
        return None if snapshot is None else snapshot.load()

    def wanted(self, namespace: str, name: str, labels: Mapping[str, str] | None) -> bool:
        """Whether an object with these labels is kept."""
        return managed(labels) or self._referenced(namespace, name)

    def observe(self, event_type: str | None, namespace: str, name: str, body: Mapping[str, Any]) -> None:
        """A watch event (``None`` for the listing): keep, update or drop the object."""
        key = (namespace, name)
        if event_type == "DELETED":
            if self._objects.pop(key, None) is not None or self._referenced(namespace, name):
                self._deleted[key] = resource_version_of(body)
            return
        labels = (body.get("metadata") or {}).get("labels")
        if not self.wanted(namespace, name, labels):
            self._objects.pop(key, None)
            return
        self._deleted.pop(key, None)
        self._store(key, body)

    def _store(self, key: Key, body: Mapping[str, Any]) -> None:
        current = self._objects.get(key)
        snapshot = Snapshot(body)
        if current is not None and current.resource_version > snapshot.resource_version:
            return  # an older copy (a read that raced a watch event) never replaces a newer one
        self._objects[key] = snapshot

    async def load(self, keys: Iterable[Key]) -> None:
        """Read from the API the referenced objects not kept yet (absent ones are not remembered)."""
        for namespace, name in keys:
            key = (namespace, name)
            if key in self._objects:
                continue
            live = await kube.get("v1", self.kind, name, namespace)
            if live is None:
                continue
            deleted = self._deleted.get(key)
            if deleted is not None and resource_version_of(live) <= deleted:
                continue
            self._store(key, live)

    def release(self, namespace: str, name: str) -> None:
        """Nothing references the object any more: drop it unless the operator manages it."""
        key = (namespace, name)
        snapshot = self._objects.get(key)
        self._deleted.pop(key, None)
        if snapshot is not None and not managed((snapshot.load().get("metadata") or {}).get("labels")):
            del self._objects[key]

    def put(self, body: Mapping[str, Any]) -> None:
        """Keep ``body`` as it is (tests, and objects read by other means)."""
        meta = body.get("metadata") or {}
        self._store((meta.get("namespace", ""), meta.get("name", "")), body)
