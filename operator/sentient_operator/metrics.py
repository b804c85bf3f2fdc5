"""The operator's own Prometheus metrics (every one is defined here)."""

from __future__ import annotations

from prometheus_client import Counter, Gauge, Histogram

RECONCILES = Counter(
    "sentient_operator_reconciles_total",
    "Reconciles run, by kind and result (ok, blocked, error).",
    ["kind", "result"],
)
RECONCILE_DURATION = Histogram(
    "sentient_operator_reconcile_duration_seconds",
    "Duration of one reconcile.",
    ["kind"],
    buckets=(0.001, 0.005, 0.01, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30),
)
RECONCILE_ERRORS = Counter(
    "sentient_operator_reconcile_errors_total",
    "Reconciles that failed or were blocked, by kind and reason.",
    ["kind", "reason"],
)
WRITES = Counter(
    "sentient_operator_api_writes_total",
    "Write requests sent to the apiserver, by verb and kind.",
    ["verb", "kind"],
)
MANAGED_AGENTS = Gauge("sentient_operator_managed_agents", "SentientAgents the operator manages.")
READY_AGENTS = Gauge("sentient_operator_ready_agents", "SentientAgents whose Ready condition is True.")
AGENT_READY = Gauge(
    "sentient_operator_agent_ready",
    "1 when the agent's Ready condition is True, else 0; one series per managed agent (leader only).",
    ["namespace", "agent"],
)
QUEUE_DEPTH = Gauge("sentient_operator_queue_depth", "Objects waiting to be reconciled.")
LEADER = Gauge("sentient_operator_leader", "1 when this replica holds the leader Lease.")
CREDENTIAL_SYNCS = Counter(
    "sentient_operator_credential_syncs_total",
    "Credential syncs of LLMProviders, by result (success, error).",
    ["namespace", "provider", "result"],
)
CREDENTIAL_LAST_SYNC = Gauge(
    "sentient_operator_credential_last_sync_timestamp_seconds",
    "Unix time of the provider's last successful credential sync (a verified watched Secret counts).",
    ["namespace", "provider"],
)
