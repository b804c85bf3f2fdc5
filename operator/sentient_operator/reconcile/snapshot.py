"""Compact copies of watched objects: the operator's in-memory view of the cluster.

The operator keeps a copy of every agent, provider and policy, of every child it manages and of
every Secret and ConfigMap something references: several objects per agent. As nested Python
dicts an object costs five to seven times its JSON (a Deployment with its defaults and status:
about 30 KB against 5 KB), which made these copies most of the operator's memory at 1000 agents.
A :class:`Snapshot` keeps the compact JSON text, without ``metadata.managedFields`` (nothing reads
it), and decodes it on each read: some 20 µs, a few times per reconcile. Every read is a fresh
copy, so no caller can change what the view holds.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any

_ENCODE = json.JSONEncoder(separators=(",", ":"), ensure_ascii=False, check_circular=False).encode
_DECODE = json.JSONDecoder().decode


def resource_version_of(body: Mapping[str, Any] | None) -> int:
    """An object's resourceVersion as a number (0 when absent or not numeric)."""
    try:
        return int(((body or {}).get("metadata") or {}).get("resourceVersion", "0"))
    except (TypeError, ValueError):
        return 0


class Snapshot:
    """One object as it was watched (or read), stored as compact JSON."""

    __slots__ = ("_text", "resource_version")

    def __init__(self, body: Mapping[str, Any]) -> None:
        """Copy ``body`` (a watch event's object, or an API answer)."""
        obj = dict(body)
        meta = obj.get("metadata")
        if meta is not None:
            obj["metadata"] = {k: v for k, v in meta.items() if k != "managedFields"}
        self._text: str = _ENCODE(obj)
        self.resource_version = resource_version_of(obj)

    def load(self) -> dict[str, Any]:
        """The object, as a new dict."""
        value: dict[str, Any] = _DECODE(self._text)
        return value

    def __len__(self) -> int:
        """Size of the stored JSON text, in characters."""
        return len(self._text)

    def __repr__(self) -> str:
        return f"Snapshot(resourceVersion={self.resource_version}, {len(self._text)} chars)"
