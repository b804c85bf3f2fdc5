"""Our own status writes, remembered so that their watch events are recognised as echoes."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any


class OwnWrites:
    """Per object, the resourceVersion our last status write produced.

    The watch delivers every write back to the operator; an event carrying exactly that
    resourceVersion holds nothing the operator does not already know, so it needs no reconcile
    (for agents this was a third of all reconciles).
    """

    def __init__(self) -> None:
        self._versions: dict[tuple[str, str], str] = {}

    def record(self, namespace: str, name: str, written: Mapping[str, Any] | str | None) -> None:
        """Our write of ``namespace/name`` returned ``written`` (the object or its resourceVersion)."""
        if isinstance(written, Mapping):
            written = (written.get("metadata") or {}).get("resourceVersion")
        if written:
            self._versions[(namespace, name)] = str(written)

    def is_echo(self, namespace: str, name: str, resource_version: str | None) -> bool:
        """Whether an event carries exactly the object our last write made."""
        return resource_version is not None and self._versions.get((namespace, name)) == str(resource_version)

    def forget(self, namespace: str, name: str) -> None:
        """The object is gone."""
        self._versions.pop((namespace, name), None)

    def __len__(self) -> int:
        return len(self._versions)
