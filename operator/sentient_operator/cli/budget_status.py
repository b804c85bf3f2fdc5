"""Spend budget usage for ``sentient status --budgets``, read from the agents' own metrics.

Each agent's runtime exports ``sentient_budget_spent``, ``sentient_budget_remaining`` and
``sentient_budget_limit`` (docs/budgets.md) on its metrics port; the status command reads them
through the API server's Service proxy (no port-forward), so it shows what the replica that
answered last read from the budget store.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

METRICS_SERVICE_PORT = "metrics"


@dataclass(frozen=True)
class BudgetUse:
    """One budget window of one subject (the agent, a tier, an API key id, a hashed user)."""

    budget: str
    window: str
    subject: str
    spent: float
    limit: float | None
    remaining: float | None
    currency: str


def parse_budget_metrics(text: str) -> list[BudgetUse]:
    """The budget series of a Prometheus exposition, one entry per (budget, window, subject)."""
    from prometheus_client.parser import text_string_to_metric_families

    spent: dict[tuple[str, str, str], float] = {}
    remaining: dict[tuple[str, str, str], float] = {}
    limits: dict[tuple[str, str], tuple[float, str]] = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            labels = sample.labels
            if sample.name == "sentient_budget_spent":
                spent[(labels["budget"], labels["window"], labels["subject"])] = sample.value
            elif sample.name == "sentient_budget_remaining":
                remaining[(labels["budget"], labels["window"], labels["subject"])] = sample.value
            elif sample.name == "sentient_budget_limit":
                limits[(labels["budget"], labels["window"])] = (sample.value, labels.get("currency", ""))
    uses = []
    for key, value in sorted(spent.items()):
        limit, currency = limits.get(key[:2], (None, ""))
        uses.append(
            BudgetUse(*key, spent=value, limit=limit, remaining=remaining.get(key), currency=currency)
        )
    return uses


def fetch_budget_metrics(namespace: str, name: str, context: str | None = None) -> list[BudgetUse]:
    """The budget usage an agent's runtime reports, through the API server's Service proxy."""
    from kubernetes import client, config

    config.load_kube_config(context=context)
    text = client.CoreV1Api().connect_get_namespaced_service_proxy_with_path(
        f"{name}:{METRICS_SERVICE_PORT}", namespace, "metrics"
    )
    return parse_budget_metrics(str(text))


def _money(value: float | None) -> str:
    return "-" if value is None else f"{value:.2f}"


def render_budget_table(rows: list[tuple[str, str, list[BudgetUse] | str]]) -> str:
    """``(namespace, agent, uses or why they are unknown)`` as a table, one line per budget window."""
    header = ("NAMESPACE", "AGENT", "BUDGET", "WINDOW", "SUBJECT", "SPENT", "LIMIT", "REMAINING")
    lines: list[tuple[str, ...]] = [header]
    for namespace, agent, uses in rows:
        if isinstance(uses, str):
            lines.append((namespace, agent, f"({uses})", "", "", "", "", ""))
            continue
        for use in uses:
            lines.append(
                (
                    namespace,
                    agent,
                    use.budget,
                    use.window,
                    use.subject,
                    f"{use.currency} {_money(use.spent)}".strip(),
                    _money(use.limit),
                    _money(use.remaining),
                )
            )
    if len(lines) == 1:
        return "No spend budgets reported."
    widths = [max(len(line[i]) for line in lines) for i in range(len(header))]
    return "\n".join(
        "  ".join(col.ljust(w) for col, w in zip(line, widths, strict=True)).rstrip() for line in lines
    )


def budget_data(uses: list[BudgetUse] | str) -> list[dict[str, Any]] | str:
    """Uses as plain data for json/yaml output."""
    if isinstance(uses, str):
        return uses
    return [use.__dict__ for use in uses]
