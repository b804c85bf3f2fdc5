"""SentientAgent: resolve references, render children, apply what differs, report status.

kopf provides the watches and the in-memory indexes; every watch event only
enqueues the affected agent (see :mod:`sentient_operator.handlers.runtime`).
:func:`reconcile_agent` then does the whole job from memory and writes only
what differs from the live state: an idle operator sends no requests.

No finalizer is used: children carry ownerReferences and go with the agent
through garbage collection; nothing outside the cluster needs cleaning.
"""

from __future__ import annotations

import copy
import hashlib
import logging
import secrets
import time
from dataclasses import replace
from typing import Any

import kopf
from pydantic import ValidationError

from agent_runtime.config import AUDIT_KEY_FILE, provider_credential_file
from sentient_operator import kube, metrics
from sentient_operator.api.v1alpha1 import GROUP, VERSION, SentientAgentSpec
from sentient_operator.build import (
    build_children,
    credentials_secret_name,
    endpoint_url,
    render_config,
    selector_string,
)
from sentient_operator.build.children import credentials_data, desired_replicas
from sentient_operator.build.common import (
    AGENT_LABEL,
    DESIRED_HASH_ANNOTATION,
    MANAGED_BY,
    PROVIDER_LABEL,
    provider_secret_name,
)
from sentient_operator.build.inputs import AgentInputs
from sentient_operator.conditions import find_condition, make_condition, merge_conditions
from sentient_operator.credentials.fingerprint import fingerprint_data
from sentient_operator.credentials.validate import CREDENTIALS_VALID, validate_key
from sentient_operator.handlers.cache import cache
from sentient_operator.handlers.runtime import RefKey, controller
from sentient_operator.references import (
    CONFIG_RESOLVED,
    CREDENTIALS_READY,
    PROVIDERS_RESOLVED,
    Problem,
    resolve,
)
from sentient_operator.settings import get_settings

log = logging.getLogger("sentient_operator.agent")

API_VERSION = f"{GROUP}/{VERSION}"
KIND = "SentientAgent"
MANAGED = {"app.kubernetes.io/managed-by": MANAGED_BY}
CHILD_KINDS = {
    "Deployment": "apps/v1",
    "Service": "v1",
    "HorizontalPodAutoscaler": "autoscaling/v2",
    "PodDisruptionBudget": "policy/v1",
    "ServiceMonitor": "monitoring.coreos.com/v1",
}
# Quick retry while something this agent needs is missing; index events usually come first.
BLOCKED_RETRY = 30.0
# Problems reported as conditions that do not stop the agent from being rendered.
NON_BLOCKING = {"Monitoring", CREDENTIALS_VALID}
# A short delay coalesces the burst of events one change causes (child, status, Deployment).
COALESCE = 0.2


# --------------------------------------------------------------------------- indexes


def _copy(body: kopf.Body) -> dict[str, Any]:
    return copy.deepcopy(dict(body))


@kopf.index(GROUP, VERSION, "sentientagents")
def sentient_agents_idx(namespace: str | None, name: str, body: kopf.Body, **_: Any) -> dict[Any, Any]:
    """SentientAgents by (namespace, name)."""
    return {(namespace, name): _copy(body)}


@kopf.index(GROUP, VERSION, "llmproviders")
def sentient_providers_idx(namespace: str | None, name: str, body: kopf.Body, **_: Any) -> dict[Any, Any]:
    """LLMProviders by (namespace, name)."""
    return {(namespace, name): _copy(body)}


@kopf.index("", "v1", "secrets")
def sentient_secrets_idx(namespace: str | None, name: str, body: kopf.Body, **_: Any) -> dict[Any, Any]:
    """Secrets by (namespace, name): provider Secrets, bound Secrets, referenced Secrets."""
    return {(namespace, name): _copy(body)}


@kopf.index("", "v1", "configmaps")
def sentient_configmaps_idx(namespace: str | None, name: str, body: kopf.Body, **_: Any) -> dict[Any, Any]:
    """ConfigMaps by (namespace, name): agents' configs and systemPromptFrom sources."""
    return {(namespace, name): _copy(body)}


def _child_index(kind: str) -> Any:
    def index(namespace: str | None, name: str, body: kopf.Body, **_: Any) -> dict[Any, Any]:
        return {(kind, namespace, name): _copy(body)}

    index.__name__ = f"sentient_children_idx_{kind.lower()}"
    return index


def _register_children() -> None:
    for kind, api_version in CHILD_KINDS.items():
        group, _, version = api_version.rpartition("/")
        plural = kube.KNOWN_KINDS[(api_version, kind)].plural
        index_id = f"sentient_children_{kind.lower()}_idx"
        kopf.index(group, version, plural, labels=MANAGED, id=index_id)(_child_index(kind))
        kopf.on.event(group, version, plural, labels=MANAGED, id=f"child-{kind.lower()}")(_on_child_event)


# --------------------------------------------------------------------------- events -> queue


def _on_child_event(labels: kopf.Labels, namespace: str | None, name: str, body: kopf.Body, **_: Any) -> None:
    _seen(str(body.get("kind", "")), namespace, name)
    agent = labels.get(AGENT_LABEL)
    if agent and namespace:
        controller.enqueue("agent", namespace, agent, COALESCE)


@kopf.on.event(GROUP, VERSION, "sentientagents", id="agent")
def on_agent_event(namespace: str | None, name: str, **_: Any) -> None:
    """Any change of an agent (or the initial listing) schedules its reconcile."""
    if namespace:
        controller.enqueue("agent", namespace, name)


@kopf.on.event(GROUP, VERSION, "llmproviders", id="agent-provider-ref")
def on_provider_event(namespace: str | None, name: str, **_: Any) -> None:
    """A provider changed: its agents re-render (chain settings, allowedNamespaces, status)."""
    if namespace:
        controller.enqueue_referrers(("LLMProvider", namespace, name), COALESCE)


@kopf.on.event("", "v1", "secrets", id="agent-secret-ref")
def on_secret_event(namespace: str | None, name: str, labels: kopf.Labels, **_: Any) -> None:
    """A Secret changed: rebind it into the agents that use it; restore a bound Secret edited by hand."""
    if not namespace:
        return
    _seen("Secret", namespace, name)
    controller.enqueue_referrers(("Secret", namespace, name), COALESCE)
    if labels.get("app.kubernetes.io/managed-by") == MANAGED_BY and labels.get(AGENT_LABEL):
        controller.enqueue("agent", namespace, labels[AGENT_LABEL], COALESCE)


@kopf.on.event("", "v1", "configmaps", id="agent-configmap-ref")
def on_configmap_event(namespace: str | None, name: str, labels: kopf.Labels, **_: Any) -> None:
    """A ConfigMap changed: a systemPromptFrom source, or an agent's own config edited by hand."""
    if not namespace:
        return
    _seen("ConfigMap", namespace, name)
    controller.enqueue_referrers(("ConfigMap", namespace, name), COALESCE)
    if labels.get("app.kubernetes.io/managed-by") == MANAGED_BY and labels.get(AGENT_LABEL):
        controller.enqueue("agent", namespace, labels[AGENT_LABEL], COALESCE)


@kopf.on.event("apiextensions.k8s.io", "v1", "customresourcedefinitions", id="agent-crds")
def on_crd_event(name: str, **_: Any) -> None:
    """The ServiceMonitor CRD came or went: re-check discovery and every agent."""
    if name == "servicemonitors.monitoring.coreos.com":
        kube.discovery.invalidate()
        for namespace, agent in cache.agent_keys():
            controller.enqueue("agent", namespace, agent, COALESCE)


_register_children()


# --------------------------------------------------------------------------- applying children


class ChildMemo:
    """What the operator last applied: desired hash -> resourceVersion the apply produced.

    When the live object still has that resourceVersion nothing touched it
    since, so apiserver-side normalisation (defaults, quantities) cannot make
    the operator re-send an unchanged object.
    """

    def __init__(self) -> None:
        self._applied: dict[tuple[str, str, str], tuple[str, str]] = {}

    def remember(self, kind: str, namespace: str, name: str, desired_hash: str, live: dict[str, Any]) -> None:
        """Record an apply's result."""
        rv = str(live.get("metadata", {}).get("resourceVersion", ""))
        self._applied[(kind, namespace, name)] = (desired_hash, rv)

    def unchanged(
        self, kind: str, namespace: str, name: str, desired_hash: str, live: dict[str, Any]
    ) -> bool:
        """Whether ``live`` is exactly what our last apply of ``desired_hash`` left."""
        memo = self._applied.get((kind, namespace, name))
        rv = str(live.get("metadata", {}).get("resourceVersion", ""))
        return memo is not None and memo == (desired_hash, rv)

    def forget_namespace_object(self, kind: str, namespace: str, name: str) -> None:
        """Forget an object (deleted)."""
        self._applied.pop((kind, namespace, name), None)


memo = ChildMemo()
# Newest object returned by our own writes, until the watch delivers it into the index.
_fresh: dict[tuple[str, str, str], dict[str, Any]] = {}


def contains(live: Any, desired: Any) -> bool:
    """Whether every field of ``desired`` has the same value in ``live`` (extra live fields allowed)."""
    if isinstance(desired, dict):
        return isinstance(live, dict) and all(k in live and contains(live[k], v) for k, v in desired.items())
    if isinstance(desired, list):
        return (
            isinstance(live, list)
            and len(live) == len(desired)
            and all(contains(a, b) for a, b in zip(live, desired, strict=True))
        )
    return bool(live == desired)


def _rv(obj: dict[str, Any] | None) -> int:
    try:
        return int((obj or {}).get("metadata", {}).get("resourceVersion", "0"))
    except ValueError:
        return 0


def _seen(kind: str, namespace: str | None, name: str) -> None:
    """A watch event for a child arrived: the index is authoritative again (also after a deletion)."""
    _fresh.pop((kind, namespace or "", name), None)


def live_child(kind: str, namespace: str, name: str) -> dict[str, Any] | None:
    """The freshest known state of a child: the index, or our own newer write."""
    indexed = cache.child(kind, namespace, name)
    fresh = _fresh.get((kind, namespace, name))
    if fresh is not None and (indexed is None or _rv(fresh) > _rv(indexed)):
        return fresh
    if fresh is not None:
        _fresh.pop((kind, namespace, name), None)
    return indexed


async def ensure(desired: dict[str, Any]) -> bool:
    """Apply ``desired`` unless the live object already matches; True when a write was sent."""
    kind = desired["kind"]
    meta = desired["metadata"]
    namespace, name = meta["namespace"], meta["name"]
    desired_hash = meta["annotations"][DESIRED_HASH_ANNOTATION]
    live = live_child(kind, namespace, name)
    if live is not None and (
        memo.unchanged(kind, namespace, name, desired_hash, live) or contains(live, desired)
    ):
        return False
    result = await kube.apply(desired)
    metrics.WRITES.labels("apply", kind).inc()
    log.info("applied %s %s/%s (%s)", kind, namespace, name, "created" if live is None else "updated")
    memo.remember(kind, namespace, name, desired_hash, result)
    _fresh[(kind, namespace, name)] = result
    return True


async def remove_unwanted(namespace: str, agent: str, api_version: str, kind: str) -> None:
    """Delete an optional child the agent no longer wants (e.g. its HPA), if it is ours."""
    live = live_child(kind, namespace, agent)
    if live is None or (live.get("metadata", {}).get("labels") or {}).get(AGENT_LABEL) != agent:
        return
    await kube.delete(api_version, kind, agent, namespace)
    metrics.WRITES.labels("delete", kind).inc()
    memo.forget_namespace_object(kind, namespace, agent)
    _fresh.pop((kind, namespace, agent), None)


# --------------------------------------------------------------------------- status


def _deployment_state(dep: dict[str, Any] | None, want: int) -> tuple[bool, bool, str, str]:
    """(available, progressing, reason, message) of the agent's Deployment."""
    if dep is None:
        return False, True, "DeploymentMissing", "the Deployment is being created"
    status = dep.get("status") or {}
    generation = dep.get("metadata", {}).get("generation", 0)
    observed = status.get("observedGeneration", 0)
    replicas = status.get("replicas", 0)
    updated = status.get("updatedReplicas", 0)
    ready = status.get("readyReplicas", 0)
    available = status.get("availableReplicas", 0)
    for cond in status.get("conditions") or []:
        if cond.get("type") == "Progressing" and cond.get("reason") == "ProgressDeadlineExceeded":
            return False, False, "ProgressDeadlineExceeded", str(cond.get("message", ""))[:300]
    if observed < generation:
        return False, True, "RolloutInProgress", "the Deployment controller has not seen the new spec yet"
    if updated < want or replicas > updated:
        return (
            available >= want and ready >= want,
            True,
            "RolloutInProgress",
            f"{updated}/{want} pods updated",
        )
    if ready < want or available < want:
        return False, True, "PodsNotReady", f"{ready}/{want} pods ready"
    return True, False, "Available", f"{ready}/{want} pods ready"


def _problem_condition(
    type_: str, problems: list[Problem], ok_reason: str, generation: int
) -> dict[str, Any]:
    mine = [p for p in problems if p.condition == type_]
    if not mine:
        return make_condition(type_, True, ok_reason, "", generation)
    return make_condition(type_, False, mine[0].reason, "; ".join(p.message for p in mine)[:1000], generation)


def _status_equal(old: dict[str, Any], new: dict[str, Any]) -> bool:
    return all(old.get(k) == v for k, v in new.items())


async def _write_status(body: dict[str, Any], status: dict[str, Any]) -> bool:
    meta = body["metadata"]
    old = body.get("status") or {}
    if _status_equal(old, status):
        return False
    await kube.patch_status(API_VERSION, KIND, meta["name"], meta["namespace"], status)
    metrics.WRITES.labels("patch-status", KIND).inc()
    ready = find_condition(status.get("conditions"), "Ready") or {}
    log.info(
        "status of %s/%s: Ready=%s (%s)",
        meta["namespace"],
        meta["name"],
        ready.get("status"),
        ready.get("reason"),
    )
    return True


async def _transition_events(
    body: dict[str, Any], old: list[dict[str, Any]], new: list[dict[str, Any]]
) -> None:
    """An Event when Ready flips or a blocking reason appears (never for repeats)."""
    for cond in new:
        before = find_condition(old, cond["type"])
        if (
            before is not None
            and before.get("status") == cond["status"]
            and before.get("reason") == cond["reason"]
        ):
            continue
        if cond["type"] == "Ready":
            if cond["status"] == "True":
                await kube.emit_event(body, "Ready", cond.get("message") or "agent is ready")
            elif before is not None and before.get("status") == "True":
                await kube.emit_event(
                    body, "NotReady", cond.get("message") or cond["reason"], type_="Warning"
                )
        elif (
            cond["type"] in (PROVIDERS_RESOLVED, CREDENTIALS_READY, CONFIG_RESOLVED, CREDENTIALS_VALID)
            and cond["status"] == "False"
        ):
            await kube.emit_event(body, cond["reason"], cond.get("message", ""), type_="Warning")
        else:
            continue
        metrics.WRITES.labels("create", "Event").inc()


# --------------------------------------------------------------------------- reconcile


def _refs(namespace: str, spec: SentientAgentSpec) -> set[RefKey]:
    refs: set[RefKey] = set()
    for entry in spec.llm.chain:
        pns = entry.provider_ref.namespace or namespace
        refs.add(("LLMProvider", pns, entry.provider_ref.name))
        refs.add(("Secret", pns, provider_secret_name(entry.provider_ref.name)))
    if spec.rate_limit_policy_ref is not None:
        policy_ns = spec.rate_limit_policy_ref.namespace or namespace
        refs.add(("RateLimitPolicy", policy_ns, spec.rate_limit_policy_ref.name))
        policy = cache.policy(policy_ns, spec.rate_limit_policy_ref.name)
        redis = ((policy or {}).get("spec") or {}).get("backend", {}).get("redis") or {}
        secret_ref = redis.get("addressSecretRef") or {}
        if secret_ref.get("name"):
            refs.add(("Secret", policy_ns, secret_ref["name"]))
    if spec.auth.api_keys is not None:
        refs.add(("Secret", namespace, spec.auth.api_keys.secret_ref.name))
    if spec.sessions.redis_secret_ref is not None:
        refs.add(("Secret", namespace, spec.sessions.redis_secret_ref.name))
    if spec.system_prompt_from is not None:
        refs.add(("ConfigMap", namespace, spec.system_prompt_from.name))
    return refs


def _audit_key(namespace: str, name: str) -> str:
    existing = cache.secret(namespace, credentials_secret_name(name)) or {}
    # The audit chain's key must survive reconciles and operator restarts: reuse the bound one.
    return existing.get(AUDIT_KEY_FILE) or secrets.token_hex(32)


def _update_agent_gauges() -> None:
    keys = list(cache.agent_keys())
    metrics.MANAGED_AGENTS.set(len(keys))
    ready = 0
    # Rebuilt whole so that deleted agents lose their series; no await in between, so a
    # scrape never sees it half-filled.
    metrics.AGENT_READY.clear()
    for namespace, name in keys:
        body = cache.agent(namespace, name) or {}
        cond = find_condition((body.get("status") or {}).get("conditions"), "Ready")
        is_ready = bool(cond and cond.get("status") == "True")
        metrics.AGENT_READY.labels(namespace, name).set(int(is_ready))
        ready += is_ready
    metrics.READY_AGENTS.set(ready)


async def reconcile_agent(namespace: str, name: str) -> float | None:
    """Bring one agent's children and status in line with its spec; the requeue delay, if any."""
    key = ("agent", namespace, name)
    body = cache.agent(namespace, name)
    if body is None or body.get("metadata", {}).get("deletionTimestamp"):
        for kind, ref_ns, ref_name in controller.refs_of.get(key, set()):
            if kind == "RateLimitPolicy":
                controller.enqueue("policy", ref_ns, ref_name)  # its agent count dropped
        controller.forget(key)
        _update_agent_gauges()
        return None
    started = time.monotonic()
    try:
        return await _reconcile(namespace, name, body)
    finally:
        metrics.RECONCILE_DURATION.labels(KIND).observe(time.monotonic() - started)
        _update_agent_gauges()


async def _reconcile(namespace: str, name: str, body: dict[str, Any]) -> float | None:
    key = ("agent", namespace, name)
    meta = body["metadata"]
    generation = int(meta.get("generation", 0))
    old_status = body.get("status") or {}
    old_conditions = list(old_status.get("conditions") or [])
    try:
        spec = SentientAgentSpec.model_validate(body.get("spec") or {})
    except ValidationError as exc:
        # Pydantic's messages name the rule, never the input value.
        fields = "; ".join(
            f"{'.'.join(str(p) for p in err['loc']) or 'spec'}: {err['msg']}" for err in exc.errors()[:5]
        )
        conditions = merge_conditions(
            old_conditions,
            [
                make_condition("Ready", False, "InvalidSpec", f"invalid fields: {fields}", generation),
                make_condition("Degraded", True, "InvalidSpec", f"invalid fields: {fields}", generation),
                make_condition("Progressing", False, "InvalidSpec", "", generation),
            ],
        )
        await _write_status(body, {"observedGeneration": generation, "conditions": conditions})
        await _transition_events(body, old_conditions, conditions)
        metrics.RECONCILES.labels(KIND, "invalid").inc()
        return None

    controller.set_refs(key, _refs(namespace, spec))
    if spec.rate_limit_policy_ref is not None:
        controller.enqueue(
            "policy", spec.rate_limit_policy_ref.namespace or namespace, spec.rate_limit_policy_ref.name
        )

    wants_monitor = spec.monitoring.service_monitor.enabled
    has_monitor = live_child("ServiceMonitor", namespace, name) is not None
    sm_available = await kube.discovery.service_monitors() if (wants_monitor or has_monitor) else False

    settings = get_settings()
    resolution = resolve(
        name=name,
        namespace=namespace,
        uid=meta["uid"],
        spec=spec,
        lookup=cache,
        image=settings.runtime_image,
        audit_key=_audit_key(namespace, name),
        service_monitor_available=sm_available,
    )
    problems = list(resolution.problems)
    apply_error: str | None = None
    config_hash = old_status.get("configHash")
    if resolution.inputs is not None:
        inputs = resolution.inputs
        if spec.rotation.validate_before_rollout:
            inputs = await _validate_rotations(inputs, problems)
        if spec.rotation.strategy == "RollingRestart":
            inputs = _with_fingerprint(inputs)
        _, config_hash = render_config(inputs)
        wanted, unwanted = build_children(inputs)
        try:
            for obj in wanted:
                await ensure(obj)
            for api_version, kind in unwanted:
                await remove_unwanted(namespace, name, api_version, kind)
        except kube.KubeError as exc:
            # Secret apply errors may quote content; report the status code and reason only.
            apply_error = f"apply failed: {exc.status} {exc.reason}"
            if exc.forbidden:
                apply_error += " (the operator's RBAC does not allow it)"
        if wants_monitor and not sm_available:
            problems.append(
                Problem(
                    "Monitoring",
                    "ServiceMonitorCRDMissing",
                    "monitoring.serviceMonitor.enabled but the monitoring.coreos.com/v1 ServiceMonitor CRD "
                    "is not installed; it will be created once the CRD exists",
                )
            )

    want = desired_replicas(resolution.inputs) if resolution.inputs is not None else spec.replicas
    dep = live_child("Deployment", namespace, name)
    available, progressing, dep_reason, dep_message = _deployment_state(dep, want)
    blocking = [p for p in problems if p.condition not in NON_BLOCKING]
    updates = [
        _problem_condition(PROVIDERS_RESOLVED, problems, "Resolved", generation),
        _problem_condition(CREDENTIALS_READY, problems, "Bound", generation),
    ]
    if spec.rotation.validate_before_rollout and resolution.inputs is not None:
        updates.append(_problem_condition(CREDENTIALS_VALID, problems, "Valid", generation))
    if blocking:
        first = blocking[0]
        updates += [
            make_condition("Ready", False, first.reason, first.message, generation),
            make_condition("Degraded", True, first.reason, first.message, generation),
            make_condition("Progressing", False, "Blocked", "waiting for references to resolve", generation),
        ]
    elif apply_error is not None:
        updates += [
            make_condition("Ready", False, "ApplyFailed", apply_error, generation),
            make_condition("Degraded", True, "ApplyFailed", apply_error, generation),
            make_condition("Progressing", False, "ApplyFailed", apply_error, generation),
        ]
    else:
        degraded_reason = problems[0].reason if problems else "AsExpected"
        updates += [
            make_condition("Ready", available, dep_reason, dep_message, generation),
            make_condition(
                "Degraded",
                bool(problems),
                degraded_reason,
                problems[0].message if problems else "",
                generation,
            ),
            make_condition(
                "Progressing", progressing, dep_reason if progressing else "Complete", dep_message, generation
            ),
        ]
    conditions = merge_conditions(old_conditions, updates)
    dep_status = (dep or {}).get("status") or {}
    status: dict[str, Any] = {
        "observedGeneration": generation,
        "conditions": conditions,
        "replicas": int(dep_status.get("replicas", 0)),
        "readyReplicas": int(dep_status.get("readyReplicas", 0)),
        "selector": selector_string(name),
        "endpoint": endpoint_url(name, namespace, spec.service.port),
        "providers": resolution.chain,
        "providersReady": f"{sum(bool(c['resolved'] and c['ready']) for c in resolution.chain)}/{len(resolution.chain)}",
        "configHash": config_hash,
    }
    await _write_status(body, status)
    await _transition_events(body, old_conditions, conditions)

    key = ("agent", namespace, name)
    if blocking or apply_error is not None:
        reason = blocking[0].reason if blocking else "ApplyFailed"
        metrics.RECONCILES.labels(KIND, "blocked" if blocking else "error").inc()
        metrics.RECONCILE_ERRORS.labels(KIND, reason).inc()
        # Index events usually resolve a missing reference first; the retry is the safety net.
        return min(controller.backoff(key), BLOCKED_RETRY) if blocking else controller.backoff(key)
    metrics.RECONCILES.labels(KIND, "ok").inc()
    return None


# (provider id, digest of the candidate key) -> rejected?  One call per new key, not per reconcile.
_validated: dict[tuple[str, str], tuple[bool, str]] = {}


async def _validate_rotations(inputs: AgentInputs, problems: list[Problem]) -> AgentInputs:
    """validateBeforeRollout: try each *changed* provider key first; keep the bound one if refused.

    Only a clear 401/403 keeps the previous key; an unreachable or inconclusive provider
    does not block a rotation (the key may be fine and the old one revoked).
    """
    bound = cache.secret(inputs.namespace, credentials_secret_name(inputs.name)) or {}
    providers = []
    for provider in inputs.providers:
        old = bound.get(provider_credential_file(provider.namespace, provider.name))
        new = provider.api_key
        if new is None or old is None or old == new:
            providers.append(provider)
            continue
        # Held in memory only, to remember the verdict on this exact key.
        digest = hashlib.sha256(new.encode()).hexdigest()
        verdict = _validated.get((provider.id, digest))
        if verdict is None:
            result = await validate_key(
                str(provider.spec.type),
                provider.spec.endpoint,
                new,
                ca_pem=provider.ca_pem,
                insecure_skip_verify=bool(provider.spec.tls and provider.spec.tls.insecure_skip_verify),
                extra_headers=provider.spec.default_headers,
            )
            verdict = (result.rejected, result.message)
            _validated[(provider.id, digest)] = verdict
        rejected, message = verdict
        if rejected:
            problems.append(
                Problem(
                    CREDENTIALS_VALID,
                    "Unauthorized",
                    f"the new credential of LLMProvider {provider.id} was refused: {message}; "
                    "the previous credential stays bound",
                )
            )
            providers.append(replace(provider, api_key=old))
        else:
            providers.append(provider)
    return replace(inputs, providers=providers)


def _with_fingerprint(inputs: AgentInputs) -> AgentInputs:
    """``inputs`` with the keyed HMAC of the bound credentials (RollingRestart only)."""
    key = controller.fingerprint_key
    if key is None:
        return inputs
    data = {k: v for k, v in credentials_data(inputs).items() if k != AUDIT_KEY_FILE}
    return replace(inputs, credentials_fingerprint=fingerprint_data(key, data))


controller.register("agent", reconcile_agent)

__all__ = ["PROVIDER_LABEL", "contains", "ensure", "reconcile_agent"]
