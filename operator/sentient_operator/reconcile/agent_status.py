"""A SentientAgent's status: conditions from problems and the Deployment, written only when changed."""

from __future__ import annotations

import logging
from typing import Any

from sentient_operator import kube, metrics
from sentient_operator.api.v1alpha1 import GROUP, VERSION
from sentient_operator.conditions import find_condition, make_condition
from sentient_operator.credentials.validate import CREDENTIALS_VALID
from sentient_operator.references import (
    CONFIG_RESOLVED,
    CREDENTIALS_READY,
    PROVIDERS_RESOLVED,
    REASON_PENDING,
    Problem,
)

log = logging.getLogger("sentient_operator.agent")

API_VERSION = f"{GROUP}/{VERSION}"
KIND = "SentientAgent"


def deployment_state(dep: dict[str, Any] | None, want: int) -> tuple[bool, bool, str, str]:
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


def problem_condition(type_: str, problems: list[Problem], ok_reason: str, generation: int) -> dict[str, Any]:
    """Condition ``type_``: True with ``ok_reason``, or False with the first problem that affects it."""
    mine = [p for p in problems if p.condition == type_]
    if not mine:
        return make_condition(type_, True, ok_reason, "", generation)
    return make_condition(type_, False, mine[0].reason, "; ".join(p.message for p in mine)[:1000], generation)


def invalid_spec_message(errors: list[Any]) -> str:
    """``invalid fields: ...`` from pydantic errors (their messages name the rule, never the input)."""
    fields = "; ".join(
        f"{'.'.join(str(p) for p in err['loc']) or 'spec'}: {err['msg']}" for err in errors[:5]
    )
    return f"invalid fields: {fields}"


async def write_status(body: dict[str, Any], status: dict[str, Any]) -> bool:
    """Merge-patch the agent's status when any field differs; True when a write was sent."""
    meta = body["metadata"]
    old = body.get("status") or {}
    if all(old.get(k) == v for k, v in status.items()):
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


async def transition_events(
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
            and cond["reason"] != REASON_PENDING
        ):
            await kube.emit_event(body, cond["reason"], cond.get("message", ""), type_="Warning")
        else:
            continue
        metrics.WRITES.labels("create", "Event").inc()
