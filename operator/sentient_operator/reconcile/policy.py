"""RateLimitPolicy reconciler: validate it, report Ready and how many agents use it."""

from __future__ import annotations

import time
from collections.abc import Mapping
from typing import Any

from pydantic import ValidationError

from sentient_operator import kube, metrics
from sentient_operator.api.v1alpha1 import GROUP, VERSION, RateLimitPolicySpec, redis_secret_names
from sentient_operator.conditions import (
    find_condition,
    invalid_spec_message,
    make_condition,
    merge_conditions,
    status_unchanged,
)
from sentient_operator.reconcile.cache import ClusterCache
from sentient_operator.reconcile.controller import Controller, RefKey
from sentient_operator.reconcile.own_writes import OwnWrites

API_VERSION = f"{GROUP}/{VERSION}"
KIND = "RateLimitPolicy"


def policy_references(body: dict[str, Any]) -> set[RefKey]:
    """The Secrets a policy reads (its Redis address, passwords, CA), if any."""
    namespace = body["metadata"]["namespace"]
    redis = ((body.get("spec") or {}).get("backend") or {}).get("redis") or {}
    return {("Secret", namespace, name) for name in redis_secret_names(redis)}


def policy_status(cache: ClusterCache, body: dict[str, Any]) -> dict[str, Any]:
    """The status a policy should have (pure, given the cache)."""
    meta = body["metadata"]
    namespace, name = meta["namespace"], meta["name"]
    generation = int(meta.get("generation", 0))
    old = (body.get("status") or {}).get("conditions") or []
    try:
        spec = RateLimitPolicySpec.model_validate(body.get("spec") or {})
    except ValidationError as exc:
        cond = make_condition("Ready", False, "InvalidSpec", invalid_spec_message(exc.errors()), generation)
    else:
        cond = make_condition("Ready", True, "Valid", "", generation)
        redis = spec.backend.redis
        if spec.backend.type == "redis" and redis is not None:
            for ref in redis.secret_refs():
                secret = cache.secret(namespace, ref.name)
                if secret is None:
                    reason, message = (
                        "SecretNotFound",
                        f"Redis Secret {namespace}/{ref.name} (key {ref.key}) not found",
                    )
                elif ref.key not in secret:
                    # The agents' reason for the same fault (references.py): one word to search for.
                    reason, message = (
                        "SecretKeyNotFound",
                        f"Redis Secret {namespace}/{ref.name} has no key {ref.key}",
                    )
                else:
                    continue
                cond = make_condition("Ready", False, reason, message, generation)
                break
    return {
        "observedGeneration": generation,
        "conditions": merge_conditions(old, [cond]),
        "agents": cache.agents_using_policy(namespace, name),
    }


def policy_events(old: list[dict[str, Any]] | None, new: list[dict[str, Any]]) -> list[tuple[str, str, str]]:
    """(reason, message, type) of the Events a change of the policy's Ready condition calls for:
    a Warning for each new False reason, ``Ready`` once it is True again; nothing on repeats or
    on a first Ready (a new, healthy policy is no news)."""
    before = find_condition(old, "Ready")
    now = find_condition(new, "Ready")
    if now is None or (
        before is not None and (before.get("status"), before.get("reason")) == (now["status"], now["reason"])
    ):
        return []
    if now["status"] == "False":
        return [(str(now["reason"]), str(now.get("message") or ""), "Warning")]
    if before is not None and before.get("status") == "False":
        return [("Ready", "the policy is usable again", "Normal")]
    return []


class PolicyReconciler:
    """Writes a policy's status when it differs; nothing else."""

    def __init__(self, cache: ClusterCache, controller: Controller) -> None:
        self.cache = cache
        self.controller = controller
        self._written = OwnWrites()
        # (namespace, name) -> the generation its agents last heard of.
        self._generations: dict[tuple[str, str], int] = {}

    def hear(
        self, type_: str | None, namespace: str, name: str, body: Mapping[str, Any]
    ) -> tuple[bool, bool]:
        """A policy event: (whether the policy needs a reconcile, whether its agents do).

        Agents render only the policy's spec, so a status write (the agent count moves while a
        fleet is created: one write a second) must not re-reconcile every agent that uses the
        policy; and the echo of our own status write needs no recount either.
        """
        key = (namespace, name)
        meta = body.get("metadata") or {}
        if type_ == "DELETED":
            self._written.forget(namespace, name)
            self._generations.pop(key, None)
            return True, True
        echo = self._written.is_echo(namespace, name, meta.get("resourceVersion"))
        generation = int(meta.get("generation", 0))
        spec_news = self._generations.get(key) != generation
        self._generations[key] = generation
        return not echo, spec_news

    async def reconcile(self, namespace: str, name: str) -> float | None:
        """Reconcile one policy; never requeues itself (its references' events do)."""
        body = self.cache.policy(namespace, name)
        if body is None:
            self.controller.forget(("policy", namespace, name))
            self._written.forget(namespace, name)
            return None
        started = time.monotonic()
        refs = policy_references(body)
        self.controller.set_refs(("policy", namespace, name), refs)
        await self.cache.load(refs)
        status = policy_status(self.cache, body)
        old = body.get("status") or {}
        if not status_unchanged(old, status):
            live = await kube.patch_status(API_VERSION, KIND, name, namespace, status)
            metrics.WRITES.labels("patch-status", KIND).inc()
            self._written.record(namespace, name, live)
            for reason, message, type_ in policy_events(old.get("conditions"), status["conditions"]):
                if await kube.emit_event(body, reason, message, type_=type_):
                    metrics.WRITES.labels("create", "Event").inc()
        metrics.RECONCILES.labels(KIND, "ok").inc()
        metrics.RECONCILE_DURATION.labels(KIND).observe(time.monotonic() - started)
        return None
