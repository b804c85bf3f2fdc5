"""A SentientAgent's status: conditions from problems and the Deployment, written only when changed."""

from __future__ import annotations

import contextlib
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


class ReadyGauges:
    """The managed/ready agent gauges, kept up to date one agent at a time.

    Each reconcile reports the Ready status it wrote, each deletion removes the agent: O(1) per
    reconcile (rebuilding them from every agent after every reconcile was quadratic in total and
    half the operator's CPU at 1000 agents).
    """

    def __init__(self) -> None:
        self._ready: dict[tuple[str, str], bool] = {}
        self._ready_count = 0

    def set(self, namespace: str, name: str, ready: bool) -> None:
        """The agent's Ready condition is now ``ready``."""
        before = self._ready.get((namespace, name))
        self._ready[(namespace, name)] = ready
        self._ready_count += int(ready) - int(bool(before))
        metrics.AGENT_READY.labels(namespace, name).set(int(ready))
        self._publish()

    def remove(self, namespace: str, name: str) -> None:
        """The agent is gone: its series goes too."""
        before = self._ready.pop((namespace, name), None)
        if before is None:
            return
        self._ready_count -= int(before)
        with contextlib.suppress(KeyError):
            metrics.AGENT_READY.remove(namespace, name)
        self._publish()

    def _publish(self) -> None:
        metrics.MANAGED_AGENTS.set(len(self._ready))
        metrics.READY_AGENTS.set(self._ready_count)


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
    # A rollout keeps the agent Ready while enough pods serve: with maxUnavailable 0 the old pods
    # stay available until new ones are, and the status still counts them before the Deployment
    # controller has even observed the new spec.
    serving = available >= want and ready >= want
    if observed < generation:
        return serving, True, "RolloutInProgress", "the Deployment controller has not seen the new spec yet"
    if updated < want or replicas > updated:
        return serving, True, "RolloutInProgress", f"{updated}/{want} pods updated"
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


async def write_status(body: dict[str, Any], status: dict[str, Any]) -> str | None:
    """Merge-patch the agent's status when any field differs; the resourceVersion the write made
    (None when nothing was sent)."""
    meta = body["metadata"]
    old = body.get("status") or {}
    if all(old.get(k) == v for k, v in status.items()):
        return None
    live = await kube.patch_status(API_VERSION, KIND, meta["name"], meta["namespace"], status)
    metrics.WRITES.labels("patch-status", KIND).inc()
    ready = find_condition(status.get("conditions"), "Ready") or {}
    log.info(
        "status of %s/%s: Ready=%s (%s)",
        meta["namespace"],
        meta["name"],
        ready.get("status"),
        ready.get("reason"),
    )
    return str((live.get("metadata") or {}).get("resourceVersion", "")) or None


def transition_events_for(old: list[dict[str, Any]], new: list[dict[str, Any]]) -> list[tuple[str, str, str]]:
    """(reason, message, type) of each Event a status change calls for: Ready flipping, a blocking
    reason appearing (never for repeats, nor for an agent's first Ready=False)."""
    events: list[tuple[str, str, str]] = []
    for cond in new:
        before = find_condition(old, cond["type"])
        if (
            before is not None
            and before.get("status") == cond["status"]
            and before.get("reason") == cond["reason"]
        ):
            continue
        if cond["type"] == "Ready":
            if before is not None and before.get("status") == cond["status"]:
                continue  # a new reason only (a rollout starting or ending): nothing to announce
            if cond["status"] == "True":
                events.append(("Ready", cond.get("message") or "agent is ready", "Normal"))
            elif before is not None and before.get("status") == "True":
                events.append(("NotReady", cond.get("message") or cond["reason"], "Warning"))
        elif (
            cond["type"] in (PROVIDERS_RESOLVED, CREDENTIALS_READY, CONFIG_RESOLVED, CREDENTIALS_VALID)
            and cond["status"] == "False"
            and cond["reason"] != REASON_PENDING
        ):
            events.append((cond["reason"], cond.get("message", ""), "Warning"))
    return events


async def transition_events(
    body: dict[str, Any], old: list[dict[str, Any]], new: list[dict[str, Any]]
) -> None:
    """Post the Events of a status change (see :func:`transition_events_for`); count those sent."""
    for reason, message, type_ in transition_events_for(old, new):
        if await kube.emit_event(body, reason, message, type_=type_):
            metrics.WRITES.labels("create", "Event").inc()
