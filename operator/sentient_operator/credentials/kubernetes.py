"""Credentials from a key of a Kubernetes Secret (watched by the provider handler)."""

from __future__ import annotations

import base64
from collections.abc import Mapping

from kubernetes import client as k8s
from kubernetes.client.exceptions import ApiException

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


def kube_secret_reader(api_client: k8s.ApiClient, timeout: float = 10.0) -> SecretReader:
    """A :data:`SecretReader` over the Kubernetes API.

    Returns ``None`` for a missing Secret; maps 401/403 to :class:`PermissionDenied` and
    anything else to :class:`StoreUnreachable`, with messages that carry no response body.
    """
    core = k8s.CoreV1Api(api_client)

    def read(namespace: str, name: str) -> Mapping[str, bytes] | None:
        try:
            secret = core.read_namespaced_secret(name, namespace, _request_timeout=timeout)
        except ApiException as exc:
            if exc.status == 404:
                return None
            if exc.status in (401, 403):
                raise PermissionDenied(
                    f"the operator may not read Secret {namespace}/{name} (HTTP {exc.status})"
                ) from None
            raise StoreUnreachable(f"reading Secret {namespace}/{name} failed (HTTP {exc.status})") from None
        except Exception as exc:  # urllib3 / socket errors: the message may hold the URL only, but stay terse
            raise StoreUnreachable(
                f"reading Secret {namespace}/{name} failed ({type(exc).__name__})"
            ) from None
        return {k: base64.b64decode(v) for k, v in (secret.data or {}).items()}

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
