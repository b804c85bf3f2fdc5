"""RateLimitPolicy handlers: the policy index, and policy events routed to the work queue."""

from __future__ import annotations

from typing import Any

import kopf

from sentient_operator.api.v1alpha1 import GROUP, VERSION
from sentient_operator.reconcile.context import context_of
from sentient_operator.reconcile.snapshot import Snapshot


@kopf.index(GROUP, VERSION, "ratelimitpolicies")
async def sentient_policies_idx(
    namespace: str | None, name: str, body: kopf.Body, **_: Any
) -> dict[Any, Any]:
    """RateLimitPolicies by (namespace, name)."""
    return {(namespace, name): Snapshot(body)}


@kopf.on.event(GROUP, VERSION, "ratelimitpolicies", id="policy")
async def on_policy_event(
    type: str | None, namespace: str | None, name: str, body: kopf.Body, memo: kopf.Memo, **_: Any
) -> None:
    """A policy changed: validate it, and re-render every agent that uses it when its spec did."""
    if not namespace:
        return
    context = context_of(memo)
    recount, agents_too = context.policies.hear(type, namespace, name, body)
    if recount:
        context.controller.enqueue("policy", namespace, name)
    if agents_too:
        context.controller.enqueue_referrers(("RateLimitPolicy", namespace, name), 0.2)
