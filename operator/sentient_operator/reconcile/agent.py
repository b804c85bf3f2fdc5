"""SentientAgent reconciler: gather inputs, build children, apply what differs, report status.

Every watch event only enqueues the affected agent (see :mod:`sentient_operator.handlers`);
:meth:`AgentReconciler.reconcile` then does the whole job from memory and writes only what
differs from the live state: an idle operator sends no requests.

No finalizer is used: children carry ownerReferences and go with the agent
through garbage collection; nothing outside the cluster needs cleaning.
"""

from __future__ import annotations

import hashlib
import json
import logging
import secrets
import time
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from typing import Any

from pydantic import ValidationError

from agent_runtime.config import AUDIT_KEY_FILE, dump_config, provider_credential_file
from sentient_operator import kube, metrics
from sentient_operator.api.v1alpha1 import SentientAgentSpec, redis_secret_names
from sentient_operator.build import (
    build_children,
    build_runtime_config,
    credentials_secret_name,
    endpoint_url,
    selector_string,
)
from sentient_operator.build.children import credentials_data, desired_replicas
from sentient_operator.build.common import provider_secret_name
from sentient_operator.build.inputs import AgentInputs
from sentient_operator.conditions import (
    find_condition,
    invalid_spec_message,
    make_condition,
    merge_conditions,
)
from sentient_operator.credentials.fingerprint import fingerprint_data
from sentient_operator.credentials.validate import CREDENTIALS_VALID, validate_key
from sentient_operator.reconcile.agent_status import (
    KIND,
    ReadyGauges,
    StatusHold,
    apply_error_message,
    deployment_state,
    hold_reason,
    problem_condition,
    transition_events,
    write_status,
)
from sentient_operator.reconcile.cache import ClusterCache, decode_secret_data
from sentient_operator.reconcile.children import ChildApplier
from sentient_operator.reconcile.controller import Controller, RefKey
from sentient_operator.reconcile.own_writes import OwnWrites
from sentient_operator.references import (
    CONFIG_RESOLVED,
    CREDENTIALS_READY,
    PROVIDERS_RESOLVED,
    Problem,
    Resolution,
    resolve,
)
from sentient_operator.settings import Settings

log = logging.getLogger("sentient_operator.agent")

# Quick retry while something this agent needs is missing; index events usually come first.
BLOCKED_RETRY = 30.0
# Seconds a policy's recount waits for more agents that start or stop using it.
POLICY_COALESCE = 1.0
# Longest waits of status writes that carry no news (see StatusHold): a Deployment its controller
# has not observed yet (a stuck controller still shows after this), and pod counts alone (a slow
# rollout's progress shows at this pace; kubectl rollout status follows every pod).
STATUS_HOLD = {"unobserved": 10.0, "progress": 30.0}
# Problems reported as conditions that do not stop the agent from being rendered.
NON_BLOCKING = {"Monitoring", CREDENTIALS_VALID}


class _RenderMemo:
    """:func:`render_config` remembered per agent: the YAML is dumped again only when the config
    changed (a reconcile that changes nothing, most of them, compares a JSON string instead)."""

    def __init__(self) -> None:
        self._last: dict[tuple[str, str], tuple[str, tuple[str, str]]] = {}

    def render(self, inputs: AgentInputs) -> tuple[str, str]:
        """``render_config(inputs)``."""
        config = build_runtime_config(inputs)
        key = json.dumps(config.to_wire(), sort_keys=True, separators=(",", ":"))
        last = self._last.get((inputs.namespace, inputs.name))
        if last is not None and last[0] == key:
            return last[1]
        text = dump_config(config)
        rendered = (text, hashlib.sha256(text.encode()).hexdigest())
        self._last[(inputs.namespace, inputs.name)] = (key, rendered)
        return rendered

    def forget(self, namespace: str, name: str) -> None:
        """The agent is gone."""
        self._last.pop((namespace, name), None)


@dataclass
class _Applied:
    """What applying one agent's children produced."""

    config_hash: str | None
    apply_error: str | None = None
    problems: list[Problem] = field(default_factory=list)


class AgentReconciler:
    """Brings one agent's children and status in line with its spec."""

    def __init__(
        self,
        settings: Settings,
        cache: ClusterCache,
        controller: Controller,
        children: ChildApplier,
        fingerprint_key: Callable[[], bytes | None],
    ) -> None:
        self.settings = settings
        self.cache = cache
        self.controller = controller
        self.children = children
        self._fingerprint_key = fingerprint_key
        # provider id -> (digest of the last candidate key tried, (rejected, message)): one
        # validation call per new key, not per reconcile; one entry per provider at most.
        self._validated: dict[str, tuple[str, tuple[bool, str]]] = {}
        self.gauges = ReadyGauges()
        self._rendered = _RenderMemo()
        self._written = OwnWrites()
        self._hold = StatusHold(STATUS_HOLD)

    # ------------------------------------------------------------------ entry point

    async def reconcile(self, namespace: str, name: str) -> float | None:
        """Reconcile one agent; the requeue delay, if any."""
        key = ("agent", namespace, name)
        body = self.cache.agent(namespace, name)
        if body is None or body.get("metadata", {}).get("deletionTimestamp"):
            self._forget(namespace, name)
            self.gauges.remove(namespace, name)
            return None
        started = time.monotonic()
        try:
            return await self._reconcile(key, body)
        finally:
            metrics.RECONCILE_DURATION.labels(KIND).observe(time.monotonic() - started)

    def _forget(self, namespace: str, name: str) -> None:
        key = ("agent", namespace, name)
        for kind, ref_ns, ref_name in self.controller.refs_of.get(key, set()):
            if kind == "RateLimitPolicy":
                self.controller.enqueue("policy", ref_ns, ref_name)  # its agent count dropped
        self.controller.forget(key)
        self.children.forget_agent(namespace, name)
        self._written.forget(namespace, name)
        self._hold.forget((namespace, name))
        self._rendered.forget(namespace, name)

    def is_own_write(self, namespace: str, name: str, resource_version: str | None) -> bool:
        """Whether an agent event carries exactly the object our last status write made."""
        return self._written.is_echo(namespace, name, resource_version)

    async def _write_status(self, body: dict[str, Any], status: dict[str, Any]) -> None:
        meta = body["metadata"]
        self._written.record(meta["namespace"], meta["name"], await write_status(body, status))

    def forget_provider(self, provider_id: str) -> None:
        """A provider went: its validation verdict goes too."""
        self._validated.pop(provider_id, None)

    async def _reconcile(self, key: tuple[str, str, str], body: dict[str, Any]) -> float | None:
        _, namespace, name = key
        meta = body["metadata"]
        generation = int(meta.get("generation", 0))
        old_conditions = list((body.get("status") or {}).get("conditions") or [])
        try:
            spec = SentientAgentSpec.model_validate(body.get("spec") or {})
        except ValidationError as exc:
            await self._report_invalid(body, old_conditions, generation, invalid_spec_message(exc.errors()))
            return None

        refs = self.references(namespace, spec)
        before = self.controller.refs_of.get(key, set())
        self.controller.set_refs(key, refs)
        # Referenced Secrets and ConfigMaps that the watch delivered before anyone wanted them.
        await self.cache.load(refs)
        # A policy counts its agents: only one this agent starts or stops using needs a recount
        # (coalesced: a fleet being created is one recount, not one per agent).
        for kind, ref_ns, ref_name in before ^ refs:
            if kind == "RateLimitPolicy":
                self.controller.enqueue("policy", ref_ns, ref_name, POLICY_COALESCE)
        resolution, wants_monitor, sm_available = await self._gather(namespace, name, meta["uid"], spec)
        problems = list(resolution.problems)
        if resolution.inputs is not None:
            problems += resolution.warnings
        applied = _Applied(config_hash=(body.get("status") or {}).get("configHash"))
        if resolution.inputs is not None:
            applied = await self._apply(resolution.inputs, spec, applied)
            problems += applied.problems
            if wants_monitor and not sm_available:
                problems.append(
                    Problem(
                        "Monitoring",
                        "ServiceMonitorCRDMissing",
                        "monitoring.serviceMonitor.enabled but the monitoring.coreos.com/v1 ServiceMonitor "
                        "CRD is not installed; it will be created once the CRD exists",
                    )
                )
        blocking = [p for p in problems if p.condition not in NON_BLOCKING]
        held = await self._report(body, spec, resolution, problems, blocking, applied, old_conditions)
        if blocking or applied.apply_error is not None:
            reason = blocking[0].reason if blocking else "ApplyFailed"
            metrics.RECONCILES.labels(KIND, "blocked" if blocking else "error").inc()
            metrics.RECONCILE_ERRORS.labels(KIND, reason).inc()
            # Index events usually resolve a missing reference first; the retry is the safety net.
            backoff = self.controller.backoff(key)
            return min(backoff, BLOCKED_RETRY) if blocking else backoff
        metrics.RECONCILES.labels(KIND, "ok").inc()
        return held

    # ------------------------------------------------------------------ gather

    def references(self, namespace: str, spec: SentientAgentSpec) -> set[RefKey]:
        """Everything the agent reads: a change of any of them re-reconciles it."""
        refs: set[RefKey] = set()
        for entry in spec.llm.chain:
            for member in entry.targets():
                pns = member.provider_ref.namespace or namespace
                refs.add(("LLMProvider", pns, member.provider_ref.name))
                refs.add(("Secret", pns, provider_secret_name(member.provider_ref.name)))
        if spec.rate_limit_policy_ref is not None:
            policy_ns = spec.rate_limit_policy_ref.namespace or namespace
            refs.add(("RateLimitPolicy", policy_ns, spec.rate_limit_policy_ref.name))
            policy = self.cache.policy(policy_ns, spec.rate_limit_policy_ref.name)
            redis = ((policy or {}).get("spec") or {}).get("backend", {}).get("redis") or {}
            refs.update(("Secret", policy_ns, secret) for secret in redis_secret_names(redis))
        if spec.auth.api_keys is not None:
            refs.add(("Secret", namespace, spec.auth.api_keys.secret_ref.name))
        if spec.auth.oidc is not None and spec.auth.oidc.introspection is not None:
            refs.add(("Secret", namespace, spec.auth.oidc.introspection.client_secret_ref.name))
        sessions_redis = spec.sessions.connection()
        if sessions_redis is not None:
            refs.update(("Secret", namespace, ref.name) for ref in sessions_redis.secret_refs())
        for sink in spec.audit.sinks if spec.audit is not None else []:
            refs.update(("Secret", namespace, ref.name) for _, ref in sink.secret_files())
        if spec.sessions.postgres is not None:
            refs.add(("Secret", namespace, spec.sessions.postgres.dsn_secret_ref.name))
        cache_redis = spec.cache.connection() if spec.cache is not None else None
        if cache_redis is not None:
            refs.update(("Secret", namespace, ref.name) for ref in cache_redis.secret_refs())
        if spec.system_prompt_from is not None:
            refs.add(("ConfigMap", namespace, spec.system_prompt_from.name))
        if spec.tracing is not None and spec.tracing.headers_secret_ref is not None:
            refs.add(("Secret", namespace, spec.tracing.headers_secret_ref.name))
        return refs

    async def _gather(
        self, namespace: str, name: str, uid: str, spec: SentientAgentSpec
    ) -> tuple[Resolution, bool, bool]:
        """Resolve the agent's references; (resolution, wants a ServiceMonitor, the CRD is served)."""
        wants_monitor = spec.monitoring.service_monitor.enabled
        has_monitor = self.children.live("ServiceMonitor", namespace, name) is not None
        sm_available = await kube.discovery.service_monitors() if (wants_monitor or has_monitor) else False
        resolution = resolve(
            name=name,
            namespace=namespace,
            uid=uid,
            spec=spec,
            lookup=self.cache,
            image=self.settings.runtime_image,
            audit_key=self._audit_key(namespace, name),
            service_monitor_available=sm_available,
        )
        return resolution, wants_monitor, sm_available

    def _bound(self, namespace: str, name: str) -> dict[str, str]:
        """The agent's bound Secret as last written or seen (our own write counts before its echo)."""
        live = self.children.live("Secret", namespace, credentials_secret_name(name))
        return decode_secret_data(live) if live is not None else {}

    def _audit_key(self, namespace: str, name: str) -> str:
        existing = self._bound(namespace, name)
        # The audit chain's key must survive reconciles and operator restarts: reuse the bound one.
        return existing.get(AUDIT_KEY_FILE) or secrets.token_hex(32)

    # ------------------------------------------------------------------ build and apply

    async def _apply(self, inputs: AgentInputs, spec: SentientAgentSpec, previous: _Applied) -> _Applied:
        new_problems: list[Problem] = []
        if spec.rotation.validate_before_rollout:
            inputs = await self._validate_rotations(inputs, new_problems)
        if spec.rotation.strategy == "RollingRestart":
            inputs = self._with_fingerprint(inputs)
        try:
            rendered = self._rendered.render(inputs)
        except ValueError as exc:
            # A spec the schema accepts but that cannot be rendered with what it references (a
            # moderation service on a provider without one): reported, the running config kept.
            problem = Problem(PROVIDERS_RESOLVED, "ConfigNotRenderable", str(exc))
            return _Applied(config_hash=previous.config_hash, problems=[*new_problems, problem])
        config_hash = rendered[1]
        wanted, unwanted = build_children(inputs, rendered)
        applied = _Applied(config_hash=config_hash, problems=new_problems)
        try:
            await self.children.ensure_all(wanted)
            for api_version, kind in unwanted:
                await self.children.remove_unwanted(inputs.namespace, inputs.name, api_version, kind)
        except kube.KubeError as exc:
            # Secret apply errors may quote content; report the status code and reason, and the
            # paths of the refused fields (a bad toleration, label or env var of spec.deployment).
            applied.apply_error = apply_error_message(exc)
            if exc.forbidden:
                applied.apply_error += " (the operator's RBAC does not allow it)"
        return applied

    async def _validate_rotations(self, inputs: AgentInputs, problems: list[Problem]) -> AgentInputs:
        """validateBeforeRollout: try each *changed* provider key first; keep the bound one if refused.

        Only a clear 401/403 keeps the previous key; an unreachable or inconclusive provider
        does not block a rotation (the key may be fine and the old one revoked).
        """
        bound = self._bound(inputs.namespace, inputs.name)
        providers = []
        for provider in inputs.providers:
            old = bound.get(provider_credential_file(provider.namespace, provider.name))
            new = provider.api_key
            if new is None or old is None or old == new:
                providers.append(provider)
                continue
            # Held in memory only, to remember the verdict on this exact key.
            digest = hashlib.sha256(new.encode()).hexdigest()
            remembered = self._validated.get(provider.id)
            if remembered is not None and remembered[0] == digest:
                verdict = remembered[1]
            else:
                result = await validate_key(
                    str(provider.spec.type),
                    provider.spec.endpoint,
                    new,
                    ca_pem=provider.ca_pem,
                    insecure_skip_verify=bool(provider.spec.tls and provider.spec.tls.insecure_skip_verify),
                    extra_headers=provider.spec.default_headers,
                )
                verdict = (result.rejected, result.message)
                self._validated[provider.id] = (digest, verdict)
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

    def _with_fingerprint(self, inputs: AgentInputs) -> AgentInputs:
        """``inputs`` with the keyed HMAC of the bound credentials (RollingRestart only)."""
        key = self._fingerprint_key()
        if key is None:
            return inputs
        data = {k: v for k, v in credentials_data(inputs).items() if k != AUDIT_KEY_FILE}
        return replace(inputs, credentials_fingerprint=fingerprint_data(key, data))

    # ------------------------------------------------------------------ status

    async def _report_invalid(
        self, body: dict[str, Any], old_conditions: list[dict[str, Any]], generation: int, message: str
    ) -> None:
        conditions = merge_conditions(
            old_conditions,
            [
                make_condition("Ready", False, "InvalidSpec", message, generation),
                make_condition("Degraded", True, "InvalidSpec", message, generation),
                make_condition("Progressing", False, "InvalidSpec", "", generation),
            ],
        )
        await self._write_status(body, {"observedGeneration": generation, "conditions": conditions})
        self.gauges.set(body["metadata"]["namespace"], body["metadata"]["name"], False)
        await transition_events(body, old_conditions, conditions)
        metrics.RECONCILES.labels(KIND, "invalid").inc()

    async def _report(
        self,
        body: dict[str, Any],
        spec: SentientAgentSpec,
        resolution: Resolution,
        problems: list[Problem],
        blocking: list[Problem],
        applied: _Applied,
        old_conditions: list[dict[str, Any]],
    ) -> float | None:
        """Write the agent's status, or hold it (see :data:`STATUS_HOLD`): the seconds until the
        held status is due, else None."""
        meta = body["metadata"]
        namespace, name = meta["namespace"], meta["name"]
        generation = int(meta.get("generation", 0))
        want = desired_replicas(resolution.inputs) if resolution.inputs is not None else spec.replicas
        dep = self.children.live("Deployment", namespace, name)
        available, progressing, dep_reason, dep_message = deployment_state(dep, want)
        updates = [
            problem_condition(PROVIDERS_RESOLVED, problems, "Resolved", generation),
            problem_condition(CREDENTIALS_READY, problems, "Bound", generation),
            # Policy, prompt ConfigMap, sessions: a condition of their own, so that a missing one
            # is a Warning Event like a missing provider, also on an agent that was never Ready.
            problem_condition(CONFIG_RESOLVED, problems, "Resolved", generation),
        ]
        if resolution.inputs is not None and (
            spec.rotation.validate_before_rollout
            or any(p.condition == CREDENTIALS_VALID for p in problems)
            or find_condition(old_conditions, CREDENTIALS_VALID) is not None
        ):
            # Shown once it has something to say (a provider's key refused), kept to say it cleared.
            updates.append(problem_condition(CREDENTIALS_VALID, problems, "Valid", generation))
        if blocking:
            first = blocking[0]
            updates += [
                make_condition("Ready", False, first.reason, first.message, generation),
                make_condition("Degraded", True, first.reason, first.message, generation),
                make_condition(
                    "Progressing", False, "Blocked", "waiting for references to resolve", generation
                ),
            ]
        elif applied.apply_error is not None:
            error = applied.apply_error
            updates += [
                make_condition("Ready", False, "ApplyFailed", error, generation),
                make_condition("Degraded", True, "ApplyFailed", error, generation),
                make_condition("Progressing", False, "ApplyFailed", error, generation),
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
                    "Progressing",
                    progressing,
                    dep_reason if progressing else "Complete",
                    dep_message,
                    generation,
                ),
            ]
        conditions = merge_conditions(old_conditions, updates)
        dep_status = (dep or {}).get("status") or {}
        chain = resolution.chain
        status: dict[str, Any] = {
            "observedGeneration": generation,
            "conditions": conditions,
            "replicas": int(dep_status.get("replicas", 0)),
            "readyReplicas": int(dep_status.get("readyReplicas", 0)),
            "selector": selector_string(name),
            "endpoint": endpoint_url(name, namespace, spec.service.port),
            "providers": chain,
            "providersReady": f"{sum(bool(c['resolved'] and c['ready']) for c in chain)}/{len(chain)}",
            "configHash": applied.config_hash,
        }
        ready = find_condition(conditions, "Ready") or {}
        self.gauges.set(namespace, name, ready.get("status") == "True")
        quiet = not problems and applied.apply_error is None
        reason = hold_reason(dep, body.get("status") or {}, status) if quiet else None
        hold = self._hold.delay((namespace, name), reason, time.monotonic())
        if hold is not None:
            return hold
        await self._write_status(body, status)
        await transition_events(body, old_conditions, conditions)
        return None
