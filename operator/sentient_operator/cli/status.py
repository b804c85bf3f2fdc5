"""``sentient status``: a table of agents with the state of their provider chain."""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass
from datetime import UTC, datetime
from typing import Any, cast

import yaml

from sentient_operator.api.v1alpha1 import GROUP, VERSION


@dataclass(frozen=True)
class ChainLink:
    """One provider of an agent's chain as the status table shows it."""

    provider: str
    model: str | None
    state: str
    synced_age: str | None
    # Position of its step in the chain for a member of a load-balanced step (members of one step
    # share it); None for a plain step, and then left out of the JSON and YAML output.
    step: int | None = None


@dataclass(frozen=True)
class AgentRow:
    """One line of the status table."""

    namespace: str
    name: str
    ready: str
    reason: str
    replicas: str
    chain: list[ChainLink]
    endpoint: str


def _condition(obj: Mapping[str, Any], type_: str) -> Mapping[str, Any] | None:
    for cond in (obj.get("status") or {}).get("conditions") or []:
        if cond.get("type") == type_:
            return dict(cond)
    return None


def age(timestamp: str | None, now: datetime | None = None) -> str | None:
    """``kubectl``-style age (``45s``, ``3m``, ``2h``, ``4d``) of an RFC 3339 timestamp."""
    if not timestamp:
        return None
    then = datetime.fromisoformat(timestamp.replace("Z", "+00:00"))
    seconds = int(((now or datetime.now(UTC)) - then).total_seconds())
    for unit, size in (("d", 86400), ("h", 3600), ("m", 60)):
        if seconds >= size * (2 if unit != "m" else 1):
            return f"{seconds // size}{unit}"
    return f"{max(seconds, 0)}s"


def build_rows(
    agents: Sequence[Mapping[str, Any]], providers: Sequence[Mapping[str, Any]], now: datetime | None = None
) -> list[AgentRow]:
    """Join agents with the providers of their chains (pure: no cluster access)."""
    by_key = {(p["metadata"]["namespace"], p["metadata"]["name"]): p for p in providers}
    rows: list[AgentRow] = []
    for agent in agents:
        meta, spec, status = agent["metadata"], agent.get("spec") or {}, agent.get("status") or {}
        ready = _condition(agent, "Ready")
        chain: list[ChainLink] = []
        steps = (spec.get("llm") or {}).get("chain") or []
        # Every member of a load-balanced step, or the step's own provider.
        links = [
            (i if "members" in step else None, m)
            for i, step in enumerate(steps)
            for m in step.get("members") or [step]
        ]
        for index, entry in links:
            ref = entry.get("providerRef") or {}
            ns = ref.get("namespace") or meta["namespace"]
            provider = by_key.get((ns, ref.get("name", "")))
            if provider is None:
                state, synced = "NotFound", None
            else:
                p_ready = _condition(provider, "Ready")
                state = (
                    "Ready"
                    if p_ready and p_ready.get("status") == "True"
                    else ((p_ready or {}).get("reason") or "Pending")
                )
                synced = age((provider.get("status") or {}).get("lastSyncTime"), now)
            name = ref.get("name", "?") if ns == meta["namespace"] else f"{ns}/{ref.get('name', '?')}"
            chain.append(ChainLink(name, entry.get("model"), state, synced, index))
        desired = spec.get("replicas", 1)
        rows.append(
            AgentRow(
                namespace=meta["namespace"],
                name=meta["name"],
                ready=(ready or {}).get("status", "Unknown"),
                reason=(ready or {}).get("reason", ""),
                replicas=f"{status.get('readyReplicas') or 0}/{status.get('replicas', desired)}",
                chain=chain,
                endpoint=status.get("endpoint") or "",
            )
        )
    return rows


def render_table(rows: list[AgentRow]) -> str:
    """The human table: one line per agent, the chain as provider(state, synced age); the members
    of a load-balanced step are joined by ``|``, the steps by ``->``."""
    header = ("NAMESPACE", "NAME", "READY", "REPLICAS", "CHAIN", "ENDPOINT")
    lines: list[tuple[str, ...]] = [header]
    for row in rows:
        steps: dict[object, list[str]] = {}
        for position, c in enumerate(row.chain):
            steps.setdefault(c.step if c.step is not None else ("plain", position), []).append(
                f"{c.provider}({c.state}{', synced ' + c.synced_age + ' ago' if c.synced_age else ''})"
            )
        chain = " -> ".join(" | ".join(members) for members in steps.values())
        ready = row.ready if row.ready == "True" or not row.reason else f"{row.ready} ({row.reason})"
        lines.append((row.namespace, row.name, ready, row.replicas, chain, row.endpoint))
    widths = [max(len(line[i]) for line in lines) for i in range(len(header))]
    return "\n".join(
        "  ".join(col.ljust(w) for col, w in zip(line, widths, strict=True)).rstrip() for line in lines
    )


def render(rows: list[AgentRow], output: str) -> str:
    """Rows as ``table``, ``json`` or ``yaml``."""
    if output == "table":
        return render_table(rows) if rows else "No agents found."
    data = [asdict(r) for r in rows]
    for row in data:
        for link in row["chain"]:
            if link["step"] is None:
                del link["step"]
    return json.dumps(data, indent=2) if output == "json" else yaml.safe_dump(data, sort_keys=False)


def fetch(
    namespace: str | None, context: str | None = None
) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """Agents and providers from the current kube context (all namespaces when ``namespace`` is None)."""
    from kubernetes import client, config

    config.load_kube_config(context=context)
    api = client.CustomObjectsApi()

    def items(plural: str) -> list[dict[str, Any]]:
        if namespace:
            res = api.list_namespaced_custom_object(GROUP, VERSION, namespace, plural)
        else:
            res = api.list_cluster_custom_object(GROUP, VERSION, plural)
        return list(cast(dict[str, Any], res).get("items", []))

    return items("sentientagents"), items("llmproviders")
