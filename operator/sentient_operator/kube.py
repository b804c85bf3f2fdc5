"""Thin asynchronous access to the Kubernetes API for the operator.

Everything goes through one ``kubernetes.client.ApiClient`` with raw
``call_api`` requests returning plain dicts: the operator builds manifests as
dicts (see :mod:`sentient_operator.build`) and applies them with server-side
apply under the field manager ``sentient-operator``. The kubernetes client is
blocking, so every call runs in a worker thread (``asyncio.to_thread``) and
never stalls kopf's event loop.

Public API (stable; other parts of the operator rely on it):

- :func:`apply` — server-side apply of a whole object, returns the live object;
- :func:`get`, :func:`list_objects`, :func:`delete`, :func:`patch_status`;
- :func:`emit_event` — a core/v1 Event on an object (never pass secret values);
- :class:`Discovery` / :data:`discovery` — whether an API (e.g. ServiceMonitor) is served.
"""

from __future__ import annotations

import asyncio
import json
import logging
import secrets
import threading
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import kubernetes
import urllib3
from kubernetes.client import ApiClient
from kubernetes.client.exceptions import ApiException

from sentient_operator.conditions import now_rfc3339

log = logging.getLogger(__name__)

FIELD_MANAGER = "sentient-operator"
REPORTING_COMPONENT = "sentient-operator"

SERVICE_MONITOR_API = ("monitoring.coreos.com/v1", "ServiceMonitor")

#: Seconds to connect and to wait for an answer: no request to the apiserver waits forever.
CONNECT_TIMEOUT = 5.0
DEFAULT_TIMEOUT = 30.0
#: Status of a KubeError for a request that got no HTTP answer (refused, reset, timed out).
UNREACHABLE = 0


@dataclass(frozen=True)
class ResourceInfo:
    """Where a kind lives in the API."""

    plural: str
    namespaced: bool = True


# Kinds the operator touches; anything else is looked up through discovery.
KNOWN_KINDS: dict[tuple[str, str], ResourceInfo] = {
    ("v1", "ConfigMap"): ResourceInfo("configmaps"),
    ("v1", "Secret"): ResourceInfo("secrets"),
    ("v1", "Service"): ResourceInfo("services"),
    ("v1", "Event"): ResourceInfo("events"),
    ("v1", "Namespace"): ResourceInfo("namespaces", namespaced=False),
    ("apps/v1", "Deployment"): ResourceInfo("deployments"),
    ("autoscaling/v2", "HorizontalPodAutoscaler"): ResourceInfo("horizontalpodautoscalers"),
    ("policy/v1", "PodDisruptionBudget"): ResourceInfo("poddisruptionbudgets"),
    ("coordination.k8s.io/v1", "Lease"): ResourceInfo("leases"),
    ("monitoring.coreos.com/v1", "ServiceMonitor"): ResourceInfo("servicemonitors"),
    ("apiextensions.k8s.io/v1", "CustomResourceDefinition"): ResourceInfo(
        "customresourcedefinitions", namespaced=False
    ),
    ("sentient.dev/v1alpha1", "SentientAgent"): ResourceInfo("sentientagents"),
    ("sentient.dev/v1alpha1", "LLMProvider"): ResourceInfo("llmproviders"),
    ("sentient.dev/v1alpha1", "RateLimitPolicy"): ResourceInfo("ratelimitpolicies"),
}


class KubeError(Exception):
    """An API request failed; carries the HTTP status and the server's reason, never object content."""

    def __init__(self, status: int, reason: str, message: str) -> None:
        super().__init__(f"{status} {reason}: {message}")
        self.status = status
        self.reason = reason
        self.message = message

    @property
    def not_found(self) -> bool:
        """The object (or its API) does not exist."""
        return self.status == 404

    @property
    def forbidden(self) -> bool:
        """RBAC refused the request."""
        return self.status == 403

    @property
    def unreachable(self) -> bool:
        """No answer from the apiserver (connection refused or reset, or the request timed out)."""
        return self.status == UNREACHABLE

    @property
    def conflict(self) -> bool:
        """Optimistic-concurrency or apply conflict."""
        return self.status == 409


_client_lock = threading.Lock()
_client: ApiClient | None = None


def load_client(kubeconfig: str | None = None) -> ApiClient:
    """The process-wide API client: in-cluster config when in a pod, else ``KUBECONFIG``."""
    global _client
    with _client_lock:
        if _client is None:
            configuration = kubernetes.client.Configuration()
            try:
                kubernetes.config.load_incluster_config(client_configuration=configuration)
            except kubernetes.config.ConfigException:
                kubernetes.config.load_kube_config(config_file=kubeconfig, client_configuration=configuration)
            _client = ApiClient(configuration)
            _client.user_agent = FIELD_MANAGER
        return _client


def set_client(client: ApiClient | None) -> None:
    """Replace the process-wide client (tests and tools that already hold one)."""
    global _client
    with _client_lock:
        _client = client


def _error(exc: ApiException) -> KubeError:
    status = int(exc.status or 0)
    reason = str(exc.reason or "")
    message = reason
    try:
        payload = json.loads(exc.body or "{}")
        message = str(payload.get("message") or reason)
        reason = str(payload.get("reason") or reason)
    except (ValueError, TypeError, AttributeError):
        pass
    return KubeError(status, reason, message)


def _call_sync(
    method: str,
    path: str,
    *,
    body: Any = None,
    query: list[tuple[str, Any]] | None = None,
    content_type: str | None = None,
    client: ApiClient | None = None,
    timeout: float = DEFAULT_TIMEOUT,
) -> dict[str, Any]:
    api = client or load_client()
    headers = {"Accept": "application/json"}
    if content_type:
        headers["Content-Type"] = content_type
    try:
        method_, url, header_params, body_, post_params = api.param_serialize(
            method,
            path,
            query_params=query or [],
            header_params=headers,
            body=body,
            auth_settings=["BearerToken"],
        )
        response = api.call_api(
            method_,
            url,
            header_params=header_params,
            body=body_,
            post_params=post_params,
            _request_timeout=(min(CONNECT_TIMEOUT, timeout), timeout),
        )
        data = response.read()
        status = int(response.status)
    except ApiException as exc:
        raise _error(exc) from None
    except (urllib3.exceptions.HTTPError, OSError) as exc:
        # Refused, reset, timed out, retries exhausted (MaxRetryError): one error type for callers.
        raise KubeError(
            UNREACHABLE, "Unreachable", f"the apiserver did not answer ({type(exc).__name__})"
        ) from None
    if not 200 <= status <= 299:
        raise _error(ApiException(status=status, reason=response.reason, body=data))
    if not data:
        return {}
    result: dict[str, Any] = json.loads(data)
    return result


async def call(
    method: str,
    path: str,
    *,
    body: Any = None,
    query: list[tuple[str, Any]] | None = None,
    content_type: str | None = None,
    request_timeout: float = DEFAULT_TIMEOUT,
) -> dict[str, Any]:
    """One raw API request in a worker thread; JSON in, dict out; :class:`KubeError` on failure.

    ``request_timeout`` bounds the connection and the wait for an answer, in seconds; no answer in time
    is a :class:`KubeError` with ``unreachable`` set, as is a refused or reset connection.
    """
    return await asyncio.to_thread(
        _call_sync,
        method,
        path,
        body=body,
        query=query,
        content_type=content_type,
        timeout=request_timeout,
    )


def _group_path(api_version: str) -> str:
    return f"/api/{api_version}" if "/" not in api_version else f"/apis/{api_version}"


async def resource_info(api_version: str, kind: str) -> ResourceInfo:
    """Plural and scope of a kind: the static table first, discovery otherwise."""
    info = KNOWN_KINDS.get((api_version, kind))
    if info is not None:
        return info
    listing = await call("GET", _group_path(api_version))
    for res in listing.get("resources", []):
        if res.get("kind") == kind and "/" not in res.get("name", ""):
            found = ResourceInfo(res["name"], bool(res.get("namespaced", True)))
            KNOWN_KINDS[(api_version, kind)] = found
            return found
    raise KubeError(404, "NotFound", f"kind {kind} is not served by {api_version}")


async def object_path(
    api_version: str, kind: str, name: str | None = None, namespace: str | None = None
) -> str:
    """The REST path of a collection (``name=None``) or of one object."""
    info = await resource_info(api_version, kind)
    path = _group_path(api_version)
    if info.namespaced and namespace:
        path += f"/namespaces/{namespace}"
    path += f"/{info.plural}"
    if name:
        path += f"/{name}"
    return path


async def apply(
    obj: Mapping[str, Any], *, field_manager: str = FIELD_MANAGER, force: bool = True
) -> dict[str, Any]:
    """Server-side apply ``obj`` (which names its apiVersion, kind, metadata.name/namespace).

    Returns the live object after the apply. Conflicting field owners are
    overridden (``force``): the operator is the authority on what it renders.
    """
    meta = obj.get("metadata", {})
    path = await object_path(obj["apiVersion"], obj["kind"], meta["name"], meta.get("namespace"))
    return await call(
        "PATCH",
        path,
        body=dict(obj),
        query=[("fieldManager", field_manager), ("force", "true" if force else "false")],
        content_type="application/apply-patch+yaml",
    )


async def get(
    api_version: str,
    kind: str,
    name: str,
    namespace: str | None = None,
    *,
    request_timeout: float = DEFAULT_TIMEOUT,
) -> dict[str, Any] | None:
    """The live object, or ``None`` when it does not exist."""
    try:
        return await call(
            "GET", await object_path(api_version, kind, name, namespace), request_timeout=request_timeout
        )
    except KubeError as exc:
        if exc.not_found:
            return None
        raise


async def list_objects(
    api_version: str,
    kind: str,
    namespace: str | None = None,
    *,
    label_selector: str | None = None,
    cached: bool = False,
) -> list[dict[str, Any]]:
    """Objects of a kind (in one namespace, or everywhere), optionally by label selector.

    ``cached``: served from the apiserver's watch cache (``resourceVersion=0``), not read from
    etcd: cheap, and at most as old as the apiserver's own watch.
    """
    query: list[tuple[str, Any]] = [("labelSelector", label_selector)] if label_selector else []
    if cached:
        query.append(("resourceVersion", "0"))
    result = await call("GET", await object_path(api_version, kind, None, namespace), query=query)
    items: list[dict[str, Any]] = result.get("items", [])
    return items


async def delete(api_version: str, kind: str, name: str, namespace: str | None = None) -> bool:
    """Delete an object in the background; ``False`` when it was already gone."""
    try:
        await call(
            "DELETE",
            await object_path(api_version, kind, name, namespace),
            body={"propagationPolicy": "Background"},
            content_type="application/json",
        )
    except KubeError as exc:
        if exc.not_found:
            return False
        raise
    return True


async def patch_status(
    api_version: str, kind: str, name: str, namespace: str | None, status: Mapping[str, Any]
) -> dict[str, Any]:
    """Merge-patch the ``status`` subresource. Fields set to ``None`` are removed."""
    path = await object_path(api_version, kind, name, namespace) + "/status"
    return await call(
        "PATCH",
        path,
        body={"status": dict(status)},
        query=[("fieldManager", FIELD_MANAGER)],
        content_type="application/merge-patch+json",
    )


async def patch(
    api_version: str, kind: str, name: str, namespace: str | None, body: Mapping[str, Any]
) -> dict[str, Any]:
    """Merge-patch an object (e.g. to remove one annotation)."""
    path = await object_path(api_version, kind, name, namespace)
    return await call(
        "PATCH",
        path,
        body=dict(body),
        query=[("fieldManager", FIELD_MANAGER)],
        content_type="application/merge-patch+json",
    )


async def emit_event(
    involved: Mapping[str, Any], reason: str, message: str, *, type_: str = "Normal"
) -> bool:
    """Record a core/v1 Event on ``involved``; True when the apiserver took it.

    The message must never contain a secret value: callers pass reasons and
    object names only. Failures are logged and swallowed: an Event is a
    courtesy, not part of reconciliation.
    """
    meta = involved.get("metadata", {})
    namespace = meta.get("namespace") or "default"
    stamp = now_rfc3339()
    event = {
        "apiVersion": "v1",
        "kind": "Event",
        "metadata": {"name": f"{meta.get('name', 'object')}.{secrets.token_hex(8)}", "namespace": namespace},
        "involvedObject": {
            "apiVersion": involved.get("apiVersion"),
            "kind": involved.get("kind"),
            "name": meta.get("name"),
            "namespace": namespace,
            "uid": meta.get("uid"),
            "resourceVersion": meta.get("resourceVersion"),
        },
        "reason": reason,
        "message": message[:1024],
        "type": type_,
        "source": {"component": REPORTING_COMPONENT},
        "reportingComponent": REPORTING_COMPONENT,
        "reportingInstance": REPORTING_COMPONENT,
        "firstTimestamp": stamp,
        "lastTimestamp": stamp,
        "count": 1,
    }
    try:
        await call(
            "POST", f"/api/v1/namespaces/{namespace}/events", body=event, content_type="application/json"
        )
    except KubeError as exc:
        log.warning("could not record event %s on %s/%s: %s", reason, namespace, meta.get("name"), exc.reason)
        return False
    return True


class Discovery:
    """Cached answers to "is this kind served?", invalidated when CRDs change."""

    def __init__(self) -> None:
        self._cache: dict[tuple[str, str], bool] = {}

    def invalidate(self) -> None:
        """Forget every answer (call when a CRD is added or removed)."""
        self._cache.clear()

    async def served(self, api_version: str, kind: str) -> bool:
        """Whether the apiserver serves ``kind`` in ``api_version`` right now."""
        key = (api_version, kind)
        if key not in self._cache:
            try:
                listing = await call("GET", _group_path(api_version))
                kinds = {r.get("kind") for r in listing.get("resources", [])}
                self._cache[key] = kind in kinds
            except KubeError as exc:
                if not exc.not_found:
                    raise
                self._cache[key] = False
        return self._cache[key]

    async def service_monitors(self) -> bool:
        """Whether prometheus-operator's ServiceMonitor CRD is installed."""
        return await self.served(*SERVICE_MONITOR_API)


discovery = Discovery()
