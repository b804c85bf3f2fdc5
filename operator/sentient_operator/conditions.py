"""Kubernetes-style status conditions.

A condition keeps its ``lastTransitionTime`` when only its reason or message
changes, so that status writes stay idempotent and ``kubectl wait`` sees real
transitions only.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from datetime import UTC, datetime
from typing import Any, Literal

Status = Literal["True", "False", "Unknown"]


def now_rfc3339() -> str:
    """The current time as Kubernetes writes it (second precision, Z suffix)."""
    return datetime.now(UTC).replace(microsecond=0).isoformat().replace("+00:00", "Z")


def make_condition(
    type_: str, status: bool | Status, reason: str, message: str = "", generation: int | None = None
) -> dict[str, Any]:
    """One condition in wire form; ``lastTransitionTime`` is filled in by :func:`merge_conditions`."""
    if isinstance(status, bool):
        status = "True" if status else "False"
    cond: dict[str, Any] = {"type": type_, "status": status, "reason": reason, "message": message}
    if generation is not None:
        cond["observedGeneration"] = generation
    return cond


def merge_conditions(
    existing: Iterable[Mapping[str, Any]] | None,
    updates: Iterable[Mapping[str, Any]],
    now: str | None = None,
) -> list[dict[str, Any]]:
    """Apply ``updates`` onto ``existing`` conditions.

    ``lastTransitionTime`` changes only when a condition's status changes;
    conditions not named in ``updates`` are kept as they are. The result is
    sorted by type so that a repeated reconcile writes identical status.
    """
    stamp = now or now_rfc3339()
    by_type: dict[str, dict[str, Any]] = {c["type"]: dict(c) for c in (existing or [])}
    for upd in updates:
        new = dict(upd)
        old = by_type.get(new["type"])
        if old is not None and old.get("status") == new["status"] and old.get("lastTransitionTime"):
            new["lastTransitionTime"] = old["lastTransitionTime"]
        else:
            new["lastTransitionTime"] = new.get("lastTransitionTime") or stamp
        by_type[new["type"]] = new
    return [by_type[t] for t in sorted(by_type)]


def find_condition(conditions: Iterable[Mapping[str, Any]] | None, type_: str) -> Mapping[str, Any] | None:
    """The condition of ``type_``, if present."""
    for cond in conditions or []:
        if cond.get("type") == type_:
            return cond
    return None


def is_true(conditions: Iterable[Mapping[str, Any]] | None, type_: str) -> bool:
    """Whether the condition ``type_`` is present with status True."""
    cond = find_condition(conditions, type_)
    return cond is not None and cond.get("status") == "True"


def status_unchanged(
    old: Mapping[str, Any], new: Mapping[str, Any], ignore: frozenset[str] = frozenset()
) -> bool:
    """Whether writing ``new`` (a partial status) over ``old`` would change nothing, fields in
    ``ignore`` aside."""
    return all(old.get(k) == v for k, v in new.items() if k not in ignore)
