"""Thin asynchronous access to the Kubernetes API for the operator.

Every request goes through one ``aiohttp`` session on the operator's event loop, as kopf's own
requests do, with raw paths and plain dicts: the operator builds manifests as dicts (see
:mod:`sentient_operator.build`) and applies them with server-side apply under the field manager
``sentient-operator``. The connection (server, CA, client certificate or token) comes from the
same login kopf uses (:func:`login`: the pod's service account, else the kubeconfig), so the
operator needs no Kubernetes client library: that saves a worker thread per request and the
35 MB that ``kubernetes``' generated models take in memory.

Public API (stable; other parts of the operator rely on it):

- :func:`apply` — server-side apply of a whole object, returns the live object;
- :func:`get`, :func:`list_objects`, :func:`delete`, :func:`patch_status`;
- :func:`call` (async) and :func:`call_blocking` (from a worker thread) — one raw request;
- :func:`emit_event` — a core/v1 Event on an object (never pass secret values);
- :class:`Discovery` / :data:`discovery` — whether an API (e.g. ServiceMonitor) is served.
"""

from __future__ import annotations

import asyncio
import json
import logging
import secrets
import threading
import time
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import aiohttp
import kopf

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
#: Connections kept open to the apiserver (the reconcile workers and the credential syncs share them).
MAX_CONNECTIONS = 32
#: A mounted service-account token is rotated by the kubelet: log in again at least this often.
RELOGIN_SECONDS = 300.0


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

    def __init__(
        self, status: int, reason: str, message: str, *, kind: str = "", fields: tuple[str, ...] = ()
    ) -> None:
        super().__init__(f"{status} {reason}: {message}")
        self.status = status
        self.reason = reason
        self.message = message
        #: The refused object's kind and the paths of the fields the apiserver named (paths only:
        #: never the values, which for a Secret are its content), from the Status' details.
        self.kind = kind
        self.fields = fields

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


# --------------------------------------------------------------------------- connection


def login() -> kopf.ConnectionInfo:
    """Where the apiserver is and how to authenticate: the pod's service account, else the kubeconfig
    (``KUBECONFIG`` or ``~/.kube/config``). The operator's kopf login handler returns the same."""
    settings = kopf.OperatorSettings()
    info = kopf.login_with_service_account(settings=settings) or kopf.login_with_kubeconfig(settings=settings)
    if info is None:
        raise kopf.LoginError("no service-account token and no kubeconfig (set KUBECONFIG)")
    return info


class _Session:
    """An aiohttp session bound to one event loop, with the connection it was made for."""

    def __init__(self, info: kopf.ConnectionInfo, loop: asyncio.AbstractEventLoop) -> None:
        self.info = info
        self.loop = loop
        self.made = time.monotonic()
        headers = {"Accept": "application/json", "User-Agent": FIELD_MANAGER, **info.as_http_headers()}
        ssl_context = info.as_ssl_context() if info.server.startswith("https") else False
        self.http = aiohttp.ClientSession(
            connector=aiohttp.TCPConnector(limit=MAX_CONNECTIONS, ssl=ssl_context),
            headers=headers,
            trust_env=info.trust_env,
        )

    @property
    def stale(self) -> bool:
        """Time to read the token again (the kubelet rotates a mounted one)."""
        return time.monotonic() - self.made > RELOGIN_SECONDS

    async def close(self) -> None:
        """Close the connections."""
        await self.http.close()


class _Connections:
    """The process-wide session on the operator's loop; calls from any other loop get their own."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._info: kopf.ConnectionInfo | None = None
        self._fixed = False
        self.home: _Session | None = None

    def configure(self, info: kopf.ConnectionInfo | None) -> None:
        """Use ``info`` from now on (``None``: log in again on the next request)."""
        with self._lock:
            self._info, self._fixed = info, info is not None
            self.home = None

    def info(self, *, fresh: bool = False) -> kopf.ConnectionInfo:
        """The connection, logging in on first use (and again when ``fresh``)."""
        with self._lock:
            if self._info is None or (fresh and not self._fixed):
                self._info = login()
            return self._info

    async def session(self) -> tuple[_Session, bool]:
        """The session for the running loop and whether it is shared (``False``: close it after use)."""
        loop = asyncio.get_running_loop()
        home = self.home
        if home is not None and home.loop is loop:
            if self._fixed or not home.stale:
                return home, True
            self.home = _Session(self.info(fresh=True), loop)
            _close_later(home)
            return self.home, True
        if home is None or home.loop.is_closed():
            self.home = _Session(self.info(), loop)
            return self.home, True
        return _Session(self.info(), loop), False

    def reset(self, session: _Session) -> None:
        """The apiserver refused the credentials: log in again before the next request."""
        if self.home is session:
            self.home = None
            _close_later(session)
        self.info(fresh=True)

    def home_loop(self) -> asyncio.AbstractEventLoop | None:
        """The loop of the shared session, while it runs."""
        home = self.home
        return home.loop if home is not None and home.loop.is_running() else None

    async def close(self) -> None:
        """Close the shared session (operator shutdown)."""
        home, self.home = self.home, None
        if home is not None and home.loop is asyncio.get_running_loop():
            await home.close()


def _close_later(session: _Session) -> None:
    # Requests still running on the replaced session finish first (each is bounded in time).
    session.loop.call_later(
        DEFAULT_TIMEOUT + CONNECT_TIMEOUT, lambda: session.loop.create_task(session.close())
    )


_connections = _Connections()


def configure(info: kopf.ConnectionInfo | None) -> None:
    """Point every request at ``info`` (tests, tools); ``None`` logs in again from the environment."""
    _connections.configure(info)


def connection_info() -> kopf.ConnectionInfo:
    """The connection the operator uses, read again (kopf's login handler: kopf logs in at start
    and again when the apiserver refuses its credentials, e.g. after the kubelet rotated the
    mounted token)."""
    return _connections.info(fresh=True)


async def close() -> None:
    """Close the shared connections (at operator shutdown)."""
    await _connections.close()


def _error(status: int, reason: str, data: bytes) -> KubeError:
    message = reason
    kind = ""
    fields: tuple[str, ...] = ()
    try:
        payload = json.loads(data or b"{}")
        message = str(payload.get("message") or reason)
        reason = str(payload.get("reason") or reason)
        details = payload.get("details") or {}
        kind = str(details.get("kind") or "")
        causes = details.get("causes") or []
        fields = tuple(
            dict.fromkeys(str(c["field"]) for c in causes if isinstance(c, dict) and c.get("field"))
        )
    except (ValueError, TypeError, AttributeError):
        pass
    return KubeError(status, reason, message, kind=kind, fields=fields)


async def _send(
    session: _Session,
    method: str,
    path: str,
    body: Any,
    query: list[tuple[str, Any]] | None,
    content_type: str | None,
    seconds: float,
) -> tuple[int, str, bytes]:
    headers = {"Content-Type": content_type or "application/json"} if body is not None else None
    data = json.dumps(body, separators=(",", ":")).encode() if body is not None else None
    try:
        async with session.http.request(
            method,
            session.info.server.rstrip("/") + path,
            params=[(k, str(v)) for k, v in query or []],
            data=data,
            headers=headers,
            timeout=aiohttp.ClientTimeout(total=seconds, sock_connect=min(CONNECT_TIMEOUT, seconds)),
        ) as response:
            return response.status, response.reason or "", await response.read()
    except (TimeoutError, aiohttp.ClientError, OSError) as exc:
        # Refused, reset, timed out, TLS failure: one error type for callers, no URL or body in it.
        raise KubeError(
            UNREACHABLE, "Unreachable", f"the apiserver did not answer ({type(exc).__name__})"
        ) from None


async def call(
    method: str,
    path: str,
    *,
    body: Any = None,
    query: list[tuple[str, Any]] | None = None,
    content_type: str | None = None,
    request_timeout: float = DEFAULT_TIMEOUT,
) -> dict[str, Any]:
    """One raw API request; JSON in, dict out; :class:`KubeError` on failure.

    ``request_timeout`` bounds the connection and the wait for an answer, in seconds; no answer in time
    is a :class:`KubeError` with ``unreachable`` set, as is a refused or reset connection. A 401 logs
    in again once (a rotated service-account token) and repeats the request.
    """
    for attempt in (1, 2):
        session, shared = await _connections.session()
        try:
            status, reason, data = await _send(
                session, method, path, body, query, content_type, request_timeout
            )
        finally:
            if not shared:
                await session.close()
        if status == 401 and attempt == 1:
            _connections.reset(session)
            continue
        if not 200 <= status <= 299:
            raise _error(status, reason, data)
        if not data:
            return {}
        result: dict[str, Any] = json.loads(data)
        return result
    raise AssertionError("unreachable")  # pragma: no cover - the loop returns or raises


def call_blocking(
    method: str,
    path: str,
    *,
    body: Any = None,
    query: list[tuple[str, Any]] | None = None,
    content_type: str | None = None,
    request_timeout: float = DEFAULT_TIMEOUT,
) -> dict[str, Any]:
    """:func:`call` from a worker thread (credential sources are blocking code run in threads).

    Runs on the operator's loop when it is up (its connections are reused), else on a loop of its
    own. Never call it on a running event loop's thread.
    """
    coro = call(
        method, path, body=body, query=query, content_type=content_type, request_timeout=request_timeout
    )
    loop = _connections.home_loop()
    if loop is not None:
        try:
            running = asyncio.get_running_loop()
        except RuntimeError:
            running = None
        if running is not loop:
            return asyncio.run_coroutine_threadsafe(coro, loop).result(request_timeout + CONNECT_TIMEOUT)

    async def once() -> dict[str, Any]:
        # A loop of its own for this one request: its session goes with it.
        try:
            return await coro
        finally:
            await _connections.close()

    return asyncio.run(once())


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
