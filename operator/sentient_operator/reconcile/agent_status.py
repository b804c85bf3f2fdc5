"""A SentientAgent's status: conditions from problems and the Deployment, written only when changed."""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Mapping
from typing import Any

from sentient_operator import kube, metrics
from sentient_operator.api.v1alpha1 import GROUP, VERSION
from sentient_operator.conditions import (
    find_condition,
    first_few,
    make_condition,
    status_unchanged,
)
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


# Status fields that only count progress: a change of these alone is not worth a write at once.
_PROGRESS_FIELDS = frozenset({"conditions", "replicas", "readyReplicas"})


def _condition_states(conditions: list[dict[str, Any]] | None) -> list[tuple[Any, ...]]:
    return sorted(
        (c.get("type"), c.get("status"), c.get("reason"), c.get("observedGeneration"))
        for c in conditions or []
    )


def hold_reason(
    dep: dict[str, Any] | None, old: dict[str, Any], new: dict[str, Any]
) -> tuple[Any, ...] | None:
    """Why writing ``new`` over ``old`` may wait (see :class:`StatusHold`), or None: write now.

    - ``("unobserved", generation)``: the Deployment controller has yet to observe our write of
      the Deployment; its status event follows, usually within a second, with real news.
    - ``("progress",)``: only messages and replica counts moved; every condition keeps its
      status and reason (a rollout counting pods).
    """
    if status_unchanged(old, new):
        return None  # nothing to write anyway
    if dep is not None:
        generation = int((dep.get("metadata") or {}).get("generation", 0))
        if int((dep.get("status") or {}).get("observedGeneration", 0)) < generation:
            return ("unobserved", generation)
    if status_unchanged(old, new, _PROGRESS_FIELDS) and _condition_states(
        old.get("conditions")
    ) == _condition_states(new.get("conditions")):
        return ("progress",)
    return None


class StatusHold:
    """Agent status writes held back while they carry no news, each for its reason's seconds.

    Each status write is a structured merge on the CRD's schema, among the apiserver's dearest
    requests, and a watch event for every watcher. Holding the status that only says "the
    Deployment controller has not seen our write yet" makes creating a fleet one status write
    per agent instead of two; holding pod counts makes a rollout two or fewer instead of three.
    Conditions that change status or reason, and problems, are written at once.
    """

    def __init__(self, seconds: Mapping[str, float]) -> None:
        """``seconds``: the longest hold per reason (the first item of :func:`hold_reason`'s)."""
        self.seconds = dict(seconds)
        self._held: dict[tuple[str, str], tuple[tuple[Any, ...], float]] = {}

    def delay(self, key: tuple[str, str], reason: tuple[Any, ...] | None, now: float) -> float | None:
        """Seconds to hold a status write for ``reason`` (None: write it now)."""
        if reason is None:
            self._held.pop(key, None)
            return None
        seconds = self.seconds[reason[0]]
        held = self._held.get(key)
        if held is None or held[0] != reason:
            self._held[key] = (reason, now)
            return seconds
        remaining = held[1] + seconds - now
        if remaining > 0:
            return remaining
        # Held long enough: written now; a later change of the same kind is held afresh.
        del self._held[key]
        return None

    def forget(self, key: tuple[str, str]) -> None:
        """The agent is gone."""
        self._held.pop(key, None)

    def __len__(self) -> int:
        return len(self._held)


def problem_condition(type_: str, problems: list[Problem], ok_reason: str, generation: int) -> dict[str, Any]:
    """Condition ``type_``: True with ``ok_reason``, or False with the first problem that affects it."""
    mine = [p for p in problems if p.condition == type_]
    if not mine:
        return make_condition(type_, True, ok_reason, "", generation)
    return make_condition(type_, False, mine[0].reason, "; ".join(p.message for p in mine)[:1000], generation)


def apply_error_message(exc: kube.KubeError) -> str:
    """``apply failed: 422 Invalid: Deployment fields spec.template...`` (field paths, never values)."""
    text = f"apply failed: {exc.status} {exc.reason}"
    if exc.fields:
        plural = "s" if len(exc.fields) > 1 else ""
        text += f": {exc.kind or 'child'} field{plural} {first_few(exc.fields)}"
    return text


async def write_status(body: dict[str, Any], status: dict[str, Any]) -> str | None:
    """Merge-patch the agent's status when any field differs; the resourceVersion the write made
    (None when nothing was sent)."""
    meta = body["metadata"]
    old = body.get("status") or {}
    if status_unchanged(old, status):
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
