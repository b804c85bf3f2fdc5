"""The operator's own service-account token, for stores that log in with it (Vault's kubernetes auth).

Kept apart from the Vault source so that the operator loads hvac (and requests, urllib3) only
when a provider actually reads from Vault.
"""

from __future__ import annotations

import base64
import json
import os
from collections.abc import Callable
from pathlib import Path

from .. import kube
from .base import PermissionDenied, StoreUnreachable

#: Where a pod's projected service-account token is mounted.
MOUNTED_TOKEN_PATH = "/var/run/secrets/kubernetes.io/serviceaccount/token"  # noqa: S105 - a path

#: Produces a service-account JWT for Vault's kubernetes auth: ``audience -> jwt``.
JwtProvider = Callable[["str | None"], str]


def mounted_token_provider(path: str = MOUNTED_TOKEN_PATH) -> JwtProvider:
    """A :data:`JwtProvider` reading the kubelet-mounted token (re-read each login: the kubelet rotates it)."""

    def provide(audience: str | None) -> str:
        try:
            return Path(path).read_text().strip()
        except OSError:
            raise PermissionDenied(f"no service-account token at {path}") from None

    return provide


def token_request_provider(
    namespace: str, service_account: str, expiration_seconds: int = 600
) -> JwtProvider:
    """A :data:`JwtProvider` that asks the apiserver for a short-lived token (TokenRequest API).

    Used when the operator runs outside a pod (or wants an audience other than the mounted token's).
    """
    path = f"/api/v1/namespaces/{namespace}/serviceaccounts/{service_account}/token"

    def provide(audience: str | None) -> str:
        request = {
            "apiVersion": "authentication.k8s.io/v1",
            "kind": "TokenRequest",
            # No audiences: the apiserver's default ones.
            "spec": {"audiences": [audience] if audience else [], "expirationSeconds": expiration_seconds},
        }
        try:
            resp = kube.call_blocking("POST", path, body=request, request_timeout=10)
        except kube.KubeError as exc:
            if exc.unreachable:
                raise StoreUnreachable(f"TokenRequest failed ({exc.reason})") from None
            raise PermissionDenied(
                f"TokenRequest for service account {namespace}/{service_account} failed (HTTP {exc.status})"
            ) from None
        token = (resp.get("status") or {}).get("token")
        if not token:
            raise PermissionDenied("TokenRequest returned no token")
        return str(token)

    return provide


def _service_account_identity() -> tuple[str, str]:
    """``(namespace, name)`` of the operator's service account.

    ``SENTIENT_SERVICE_ACCOUNT`` (``namespace/name``, or a name in the operator's namespace) wins;
    in a pod the mounted token's subject (``system:serviceaccount:<ns>:<name>``) says it.
    """
    configured = os.environ.get("SENTIENT_SERVICE_ACCOUNT", "").strip()
    default_ns = (
        os.environ.get("SENTIENT_OPERATOR_NAMESPACE") or os.environ.get("POD_NAMESPACE") or "sentient-system"
    )
    if configured:
        ns, _, name = configured.rpartition("/")
        return ns or default_ns, name
    try:
        payload = Path(MOUNTED_TOKEN_PATH).read_text().split(".")[1]
        claims = json.loads(base64.urlsafe_b64decode(payload + "=" * (-len(payload) % 4)))
        parts = str(claims.get("sub", "")).split(":")
        if len(parts) == 4 and parts[:2] == ["system", "serviceaccount"]:
            return parts[2], parts[3]
    except (OSError, IndexError, ValueError):
        pass
    return default_ns, "sentient-operator"


def default_jwt_provider(token_request: bool = True) -> JwtProvider:
    """The operator's own service-account token for Vault's kubernetes auth.

    The kubelet-mounted token when the operator runs in a pod and the role needs no particular
    audience; otherwise a short-lived token from the TokenRequest API (needs ``create`` on
    ``serviceaccounts/token`` for the operator's own service account).
    """
    mounted = mounted_token_provider()

    def provide(audience: str | None) -> str:
        if audience is None and Path(MOUNTED_TOKEN_PATH).exists():
            return mounted(None)
        if not token_request:
            raise PermissionDenied("no service-account token: not in a pod and TokenRequest is off")
        namespace, name = _service_account_identity()
        return token_request_provider(namespace, name)(audience)

    return provide
