"""Helpers shared by the credential tests: an in-memory Secret reader and a provider-Secret store."""

from __future__ import annotations

import base64
from collections.abc import Mapping
from typing import Any

from sentient_operator.credentials.base import SecretReader


class Secrets:
    """Kubernetes Secrets as a dict ``(namespace, name) -> {key: text}``; ``reader`` reads them as bytes."""

    def __init__(self) -> None:
        self.data: dict[tuple[str, str], dict[str, str]] = {}
        self.reads = 0

    def put(self, namespace: str, name: str, **values: str) -> None:
        """Create or replace a Secret."""
        self.data[(namespace, name)] = dict(values)

    def delete(self, namespace: str, name: str) -> None:
        """Remove a Secret."""
        self.data.pop((namespace, name), None)

    @property
    def reader(self) -> SecretReader:
        """A :data:`SecretReader` over this store."""

        def read(namespace: str, name: str) -> Mapping[str, bytes] | None:
            self.reads += 1
            found = self.data.get((namespace, name))
            return None if found is None else {k: v.encode() for k, v in found.items()}

        return read


class ProviderSecretStore:
    """Stands in for the apiserver's provider Secrets in syncer tests: ``apply`` and ``get``.

    The e2e tests run the same syncer against a real apiserver; here the point is what the
    syncer writes and, above all, what it does not write after a failed fetch.
    """

    def __init__(self) -> None:
        self.objects: dict[tuple[str, str], dict[str, Any]] = {}
        self.applies = 0

    async def apply(self, obj: Mapping[str, Any]) -> dict[str, Any]:
        """Server-side apply (whole object)."""
        self.applies += 1
        meta = obj["metadata"]
        stored = {k: v for k, v in obj.items()}
        self.objects[(meta["namespace"], meta["name"])] = stored
        return stored

    async def get(self, namespace: str, name: str) -> dict[str, Any] | None:
        """The stored object, or None."""
        return self.objects.get((namespace, name))

    def value(self, namespace: str, name: str, key: str = "apiKey") -> str | None:
        """A decoded data value of a stored Secret."""
        obj = self.objects.get((namespace, name))
        if obj is None or key not in obj.get("data", {}):
            return None
        return base64.b64decode(obj["data"][key]).decode()


def provider_body(name: str, namespace: str, spec: dict[str, Any], generation: int = 1) -> dict[str, Any]:
    """An LLMProvider object as kopf hands it over."""
    return {
        "apiVersion": "sentient.dev/v1alpha1",
        "kind": "LLMProvider",
        "metadata": {"name": name, "namespace": namespace, "uid": f"uid-{name}", "generation": generation},
        "spec": spec,
    }
