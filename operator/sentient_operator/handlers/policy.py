"""RateLimitPolicy: validate it, report Ready and how many agents use it; re-render those agents on change."""

from __future__ import annotations

import copy
import time
from typing import Any

import kopf
from pydantic import ValidationError

from sentient_operator import kube, metrics
from sentient_operator.api.v1alpha1 import GROUP, VERSION, RateLimitPolicySpec
from sentient_operator.conditions import make_condition, merge_conditions
from sentient_operator.handlers.cache import cache
from sentient_operator.handlers.runtime import controller

API_VERSION = f"{GROUP}/{VERSION}"
KIND = "RateLimitPolicy"


@kopf.index(GROUP, VERSION, "ratelimitpolicies")
def sentient_policies_idx(namespace: str | None, name: str, body: kopf.Body, **_: Any) -> dict[Any, Any]:
    """RateLimitPolicies by (namespace, name)."""
    return {(namespace, name): copy.deepcopy(dict(body))}


@kopf.on.event(GROUP, VERSION, "ratelimitpolicies", id="policy")
def on_policy_event(namespace: str | None, name: str, **_: Any) -> None:
    """A policy changed: validate it, and re-render every agent that uses it."""
    if not namespace:
        return
    controller.enqueue("policy", namespace, name)
    controller.enqueue_referrers(("RateLimitPolicy", namespace, name), 0.2)


def agents_using(namespace: str, name: str) -> int:
    """SentientAgents whose rateLimitPolicyRef names this policy."""
    count = 0
    for agent_ns, agent_name in cache.agent_keys():
        ref = ((cache.agent(agent_ns, agent_name) or {}).get("spec") or {}).get("rateLimitPolicyRef") or {}
        if ref.get("name") == name and (ref.get("namespace") or agent_ns) == namespace:
            count += 1
    return count


def policy_status(body: dict[str, Any]) -> dict[str, Any]:
    """The status a policy should have (pure, given the cache)."""
    meta = body["metadata"]
    namespace, name = meta["namespace"], meta["name"]
    generation = int(meta.get("generation", 0))
    old = (body.get("status") or {}).get("conditions") or []
    try:
        spec = RateLimitPolicySpec.model_validate(body.get("spec") or {})
    except ValidationError as exc:
        # Pydantic's messages name the rule, never the input value.
        fields = "; ".join(
            f"{'.'.join(str(p) for p in err['loc']) or 'spec'}: {err['msg']}" for err in exc.errors()[:5]
        )
        cond = make_condition("Ready", False, "InvalidSpec", f"invalid fields: {fields}", generation)
    else:
        cond = make_condition("Ready", True, "Valid", "", generation)
        redis = spec.backend.redis
        if spec.backend.type == "redis" and redis is not None:
            secret = cache.secret(namespace, redis.address_secret_ref.name)
            if secret is None or redis.address_secret_ref.key not in secret:
                cond = make_condition(
                    "Ready",
                    False,
                    "SecretNotFound",
                    f"Redis address Secret {namespace}/{redis.address_secret_ref.name} "
                    f"(key {redis.address_secret_ref.key}) not found",
                    generation,
                )
    return {
        "observedGeneration": generation,
        "conditions": merge_conditions(old, [cond]),
        "agents": agents_using(namespace, name),
    }


async def reconcile_policy(namespace: str, name: str) -> float | None:
    """Write the policy's status when it differs; nothing else."""
    body = cache.policy(namespace, name)
    if body is None:
        controller.forget(("policy", namespace, name))
        return None
    started = time.monotonic()
    status = policy_status(body)
    controller.set_refs(
        ("policy", namespace, name),
        {("Secret", namespace, ref)}
        if (
            ref := (((body.get("spec") or {}).get("backend") or {}).get("redis") or {})
            .get("addressSecretRef", {})
            .get("name")
        )
        else set(),
    )
    old = body.get("status") or {}
    if any(old.get(k) != v for k, v in status.items()):
        await kube.patch_status(API_VERSION, KIND, name, namespace, status)
        metrics.WRITES.labels("patch-status", KIND).inc()
    metrics.RECONCILES.labels(KIND, "ok").inc()
    metrics.RECONCILE_DURATION.labels(KIND).observe(time.monotonic() - started)
    return None


controller.register("policy", reconcile_policy)
