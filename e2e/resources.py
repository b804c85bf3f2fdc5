"""kubectl-level helpers the e2e tests share: apply, read, dry-run, conditions."""

from __future__ import annotations

import json
import subprocess
from typing import Any

import yaml


def apply(cluster: Any, *docs: dict[str, Any]) -> None:
    """kubectl apply of manifests."""
    cluster.kubectl("apply", "-f", "-", input="\n---\n".join(yaml.safe_dump(d) for d in docs))


def get(cluster: Any, kind: str, name: str, namespace: str) -> dict[str, Any] | None:
    """One object as a dict, or None."""
    proc = cluster.kubectl("get", kind, name, "-n", namespace, "-o", "json", check=False)
    if proc.returncode != 0:
        return None
    obj: dict[str, Any] = json.loads(proc.stdout)
    return obj


def condition(obj: dict[str, Any] | None, type_: str) -> dict[str, Any]:
    """A status condition of ``obj`` ({} when absent)."""
    for cond in ((obj or {}).get("status") or {}).get("conditions") or []:
        if cond.get("type") == type_:
            return dict(cond)
    return {}


def events(cluster: Any, namespace: str, field_selector: str) -> list[dict[str, Any]]:
    """The Events of ``namespace`` that match a field selector (``involvedObject.name=x,reason=y``)."""
    out = cluster.kubectl(
        "get", "events", "-n", namespace, "--field-selector", field_selector, "-o", "json"
    ).stdout
    items: list[dict[str, Any]] = json.loads(out)["items"]
    return items


def dry_run(cluster: Any, namespace: str, text: str) -> subprocess.CompletedProcess[str]:
    """Server-side apply, dry run, strict field validation; never raises."""
    return cluster.kubectl(
        "apply",
        "--server-side",
        "--dry-run=server",
        "--validate=strict",
        "--field-manager=sentient-e2e",
        "-n",
        namespace,
        "-f",
        "-",
        check=False,
        input=text,
    )
