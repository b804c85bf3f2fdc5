"""Credentials from a key of a Kubernetes Secret (watched by the provider handler)."""

from __future__ import annotations

import base64
from collections.abc import Mapping

from .. import kube
from ..api.v1alpha1 import SecretKeyRef
from .base import (
    CredentialSource,
    FetchedCredential,
    KeyNotFound,
    PermissionDenied,
    SecretNotFound,
    SecretReader,
    StoreUnreachable,
    clean_value,
)


def kube_secret_reader(timeout: float = 10.0) -> SecretReader:
    """A :data:`SecretReader` over the Kubernetes API (blocking: credential sources run in threads).

    Returns ``None`` for a missing Secret; maps 401/403 to :class:`PermissionDenied` and
    anything else to :class:`StoreUnreachable`, with messages that carry no response body.
    """

    def read(namespace: str, name: str) -> Mapping[str, bytes] | None:
        try:
            secret = kube.call_blocking(
                "GET", f"/api/v1/namespaces/{namespace}/secrets/{name}", request_timeout=timeout
            )
        except kube.KubeError as exc:
            if exc.not_found:
                return None
            if exc.status in (401, 403):
                raise PermissionDenied(
                    f"the operator may not read Secret {namespace}/{name} (HTTP {exc.status})"
                ) from None
            what = f"HTTP {exc.status}" if exc.status else exc.reason
            raise StoreUnreachable(f"reading Secret {namespace}/{name} failed ({what})") from None
        return {k: base64.b64decode(v) for k, v in (secret.get("data") or {}).items()}

    return read


class KubernetesSecretSource(CredentialSource):
    """The credential is one key of a Kubernetes Secret."""

    kind = "kubernetes"
    external = False

    def __init__(self, ref: SecretKeyRef, default_namespace: str, reader: SecretReader) -> None:
        self.namespace = default_namespace
        self.name = ref.name
        self.key = ref.key
        self._reader = reader

    def describe(self) -> str:
        """``Secret ns/name key k``."""
        return f"Secret {self.namespace}/{self.name} key {self.key!r}"

    def referenced_secrets(self) -> list[tuple[str, str]]:
        """The source Secret itself."""
        return [(self.namespace, self.name)]

    def fetch(self) -> FetchedCredential:
        """Read the key; a missing Secret or key raises the matching error."""
        data = self._reader(self.namespace, self.name)
        if data is None:
            raise SecretNotFound(f"Secret {self.namespace}/{self.name} not found")
        if self.key not in data:
            raise KeyNotFound(f"Secret {self.namespace}/{self.name} has no key {self.key!r}")
        return FetchedCredential(value=clean_value(data[self.key], self.describe()))
