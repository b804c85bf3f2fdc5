"""Small helpers the credential e2e tests share: create objects, read Secrets, wait for states."""

from __future__ import annotations

import base64
from typing import Any, TypeVar

from kubernetes import client as k8s
from kubernetes.client.exceptions import ApiException

T = TypeVar("T")
GROUP, VERSION = "sentient.dev", "v1alpha1"


def put_secret(api: k8s.ApiClient, namespace: str, name: str, data: dict[str, str]) -> None:
    """Create or replace an Opaque Secret with ``stringData``."""
    core = k8s.CoreV1Api(api)
    body = k8s.V1Secret(
        metadata=k8s.V1ObjectMeta(name=name, namespace=namespace), string_data=data, type="Opaque"
    )
    try:
        core.create_namespaced_secret(namespace, body)
    except ApiException as exc:
        if exc.status != 409:
            raise
        core.replace_namespaced_secret(name, namespace, body)


def delete_secret(api: k8s.ApiClient, namespace: str, name: str) -> None:
    """Delete a Secret if it exists."""
    try:
        k8s.CoreV1Api(api).delete_namespaced_secret(name, namespace)
    except ApiException as exc:
        if exc.status != 404:
            raise


def secret_value(api: k8s.ApiClient, namespace: str, name: str, key: str = "apiKey") -> str | None:
    """A decoded value of a Secret, or None."""
    try:
        secret = k8s.CoreV1Api(api).read_namespaced_secret(name, namespace)
    except ApiException as exc:
        if exc.status == 404:
            return None
        raise
    raw = (secret.data or {}).get(key)
    return base64.b64decode(raw).decode() if raw is not None else None


def secret_object(api: k8s.ApiClient, namespace: str, name: str) -> dict[str, Any] | None:
    """A Secret as a dict, or None."""
    try:
        obj: dict[str, Any] = api.sanitize_for_serialization(
            k8s.CoreV1Api(api).read_namespaced_secret(name, namespace)
        )
        return obj
    except ApiException as exc:
        if exc.status == 404:
            return None
        raise


def create_provider(api: k8s.ApiClient, namespace: str, name: str, spec: dict[str, Any]) -> dict[str, Any]:
    """Create an LLMProvider."""
    body = {
        "apiVersion": f"{GROUP}/{VERSION}",
        "kind": "LLMProvider",
        "metadata": {"name": name},
        "spec": spec,
    }
    obj = k8s.CustomObjectsApi(api).create_namespaced_custom_object(
        GROUP, VERSION, namespace, "llmproviders", body
    )
    return dict(obj)  # type: ignore[call-overload]


def get_provider(api: k8s.ApiClient, namespace: str, name: str) -> dict[str, Any]:
    """An LLMProvider as a dict."""
    obj = k8s.CustomObjectsApi(api).get_namespaced_custom_object(
        GROUP, VERSION, namespace, "llmproviders", name
    )
    return dict(obj)  # type: ignore[call-overload]


def condition(obj: dict[str, Any], type_: str) -> dict[str, Any] | None:
    """A condition of an object's status."""
    for cond in (obj.get("status") or {}).get("conditions") or []:
        if cond.get("type") == type_:
            return dict(cond)
    return None


def condition_is(api: k8s.ApiClient, namespace: str, name: str, type_: str, status: str, reason: str) -> bool:
    """Whether the provider's condition has this status and reason."""
    cond = condition(get_provider(api, namespace, name), type_)
    return cond is not None and cond.get("status") == status and cond.get("reason") == reason


def events(api: k8s.ApiClient, namespace: str) -> list[dict[str, Any]]:
    """Every Event in a namespace as dicts."""
    items = k8s.CoreV1Api(api).list_namespaced_event(namespace).items
    return [api.sanitize_for_serialization(e) for e in items]


def cluster_ca_pem(kubeconfig: str) -> str:
    """The apiserver's CA bundle from a kubeconfig's current context."""
    from pathlib import Path

    import yaml

    cfg = yaml.safe_load(Path(kubeconfig).read_text())
    ctx_name = cfg.get("current-context")
    ctx = next(c["context"] for c in cfg["contexts"] if c["name"] == ctx_name)
    cl = next(c["cluster"] for c in cfg["clusters"] if c["name"] == ctx["cluster"])
    if cl.get("certificate-authority-data"):
        return base64.b64decode(cl["certificate-authority-data"]).decode()
    return Path(cl["certificate-authority"]).read_text()


def service_account_token(api: k8s.ApiClient, namespace: str, name: str, seconds: int = 3600) -> str:
    """A TokenRequest token for a service account (created if missing)."""
    core = k8s.CoreV1Api(api)
    try:
        core.create_namespaced_service_account(
            namespace, k8s.V1ServiceAccount(metadata=k8s.V1ObjectMeta(name=name))
        )
    except ApiException as exc:
        if exc.status != 409:
            raise
    req = k8s.AuthenticationV1TokenRequest(
        spec=k8s.V1TokenRequestSpec(audiences=[], expiration_seconds=seconds)
    )
    resp = core.create_namespaced_service_account_token(name, namespace, req)
    assert resp.status is not None
    return str(resp.status.token)


def bind_cluster_role(
    api: k8s.ApiClient, binding: str, role: str, namespace: str, service_account: str
) -> None:
    """A ClusterRoleBinding of ``role`` to a service account (replaced if it exists)."""
    rbac = k8s.RbacAuthorizationV1Api(api)
    body = k8s.V1ClusterRoleBinding(
        metadata=k8s.V1ObjectMeta(name=binding),
        role_ref=k8s.V1RoleRef(api_group="rbac.authorization.k8s.io", kind="ClusterRole", name=role),
        subjects=[k8s.RbacV1Subject(kind="ServiceAccount", name=service_account, namespace=namespace)],
    )
    try:
        rbac.create_cluster_role_binding(body)
    except ApiException as exc:
        if exc.status != 409:
            raise


def unbind_cluster_role(api: k8s.ApiClient, binding: str) -> None:
    """Delete a ClusterRoleBinding if it exists."""
    try:
        k8s.RbacAuthorizationV1Api(api).delete_cluster_role_binding(binding)
    except ApiException as exc:
        if exc.status != 404:
            raise
