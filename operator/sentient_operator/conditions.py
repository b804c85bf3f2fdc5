"""Kubernetes-style status conditions.

A condition keeps its ``lastTransitionTime`` when only its reason or message
changes, so that status writes stay idempotent and ``kubectl wait`` sees real
transitions only.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
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


def first_few(items: Sequence[str], limit: int = 5) -> str:
    """``items`` joined by commas, at most ``limit`` of them, then ``...`` when there are more:
    a condition message stays short however many fields an object got wrong."""
    return ", ".join(items[:limit]) + (", ..." if len(items) > limit else "")


def spec_path(loc: Iterable[str | int]) -> str:
    """The wire path of a validation error's location in a spec: ``spec.deployment.env[0].name``."""
    path = "spec"
    for part in loc:
        path += f"[{part}]" if isinstance(part, int) else f".{part}"
    return path


def invalid_spec_message(errors: Sequence[Mapping[str, Any]], limit: int = 5) -> str:
    """``invalid fields: spec.x: <rule>; ...`` from a spec's pydantic errors, each field once.

    Pydantic's messages name the rule, never the input (the input travels apart, in the error's
    ``input``, which is left out): a credential written into a wrong field is not repeated here.
    """
    found: dict[str, str] = {}
    for err in errors:
        found.setdefault(spec_path(err["loc"]), str(err["msg"]))
    fields = [f"{path}: {msg}" for path, msg in found.items()]
    return "invalid fields: " + "; ".join(fields[:limit]) + ("; ..." if len(fields) > limit else "")
