"""Prometheus metrics of the agent runtime.

Every metric lives here so that names and label sets stay consistent across
modules and bounded: labels carry provider ids, model names, routes and status
codes from the config, never caller input or secret values.
"""

from __future__ import annotations

import os

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest

REGISTRY = CollectorRegistry(auto_describe=True)

# With ``server.workers`` > 1 every worker process counts into files under this directory
# (prometheus_client's multiprocess mode, chosen when the variable is set before the client is
# imported: the supervisor sets it for its workers) and ``/metrics`` sums the workers' files:
# one scrape target per pod, the same series as with one process. Gauges say how the workers'
# values combine (``multiprocess_mode``; ignored with one process).
MULTIPROCESS_ENV = "PROMETHEUS_MULTIPROC_DIR"


def exposition() -> bytes:
    """The Prometheus text of this runtime: its registry, or every worker's files summed."""
    directory = os.environ.get(MULTIPROCESS_ENV)
    if not directory:
        return generate_latest(REGISTRY)
    from prometheus_client import multiprocess

    registry = CollectorRegistry()
    multiprocess.MultiProcessCollector(registry, path=directory)
    return generate_latest(registry)


_LATENCY_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120)

REQUESTS = Counter(
    "sentient_requests_total",
    "HTTP requests served, by route and status code.",
    ["route", "status"],
    registry=REGISTRY,
)
REQUEST_DURATION = Histogram(
    "sentient_request_duration_seconds",
    "Time from request received to response finished, by route.",
    ["route"],
    buckets=_LATENCY_BUCKETS,
    registry=REGISTRY,
)
IN_FLIGHT = Gauge(
    "sentient_requests_in_flight",
    "Requests being served now.",
    registry=REGISTRY,
    multiprocess_mode="livesum",
)
BUSY_POLL_SECONDS = Counter(
    "sentient_busy_poll_seconds_total",
    "Time the event loop spent polling instead of sleeping after a request started or ended (server.busyPoll).",
    registry=REGISTRY,
)
TIME_TO_FIRST_TOKEN = Histogram(
    "sentient_time_to_first_token_seconds",
    "Time from request received to the first token streamed, by provider and model.",
    ["provider", "model"],
    buckets=_LATENCY_BUCKETS,
    registry=REGISTRY,
)
UPSTREAM_DURATION = Histogram(
    "sentient_upstream_request_duration_seconds",
    "Duration of one upstream attempt, by provider, model and outcome.",
    ["provider", "model", "outcome"],
    buckets=_LATENCY_BUCKETS,
    registry=REGISTRY,
)
TOKENS = Counter(
    "sentient_tokens_total",
    "Tokens used, by provider, model and direction (input|output).",
    ["provider", "model", "direction"],
    registry=REGISTRY,
)
PROVIDER_ERRORS = Counter(
    "sentient_provider_errors_total",
    "Failed upstream attempts, by provider, model and error class (429, 5xx, timeout, connect-error, reset, 4xx).",
    ["provider", "model", "error"],
    registry=REGISTRY,
)
RETRIES = Counter(
    "sentient_retries_total",
    "Retries against the same provider.",
    ["provider", "model"],
    registry=REGISTRY,
)
FAILOVERS = Counter(
    "sentient_failovers_total",
    "Failovers from one chain entry to the next, by source provider and phase (before_first_token|mid_stream).",
    ["provider", "model", "phase"],
    registry=REGISTRY,
)
BREAKER_STATE = Gauge(
    "sentient_circuit_breaker_state",
    "Circuit breaker state per provider and model: 0 closed, 1 half-open, 2 open.",
    ["provider", "model"],
    registry=REGISTRY,
    # Each worker has its own breaker: the most open one.
    multiprocess_mode="livemax",
)
BALANCE_PICKS = Counter(
    "sentient_balance_picks_total",
    "Requests a load-balanced chain step sent first to a member, by step (position in the chain, "
    "from 0), provider (the member's LLMProvider, one per key) and model.",
    ["step", "provider", "model"],
    registry=REGISTRY,
)
UPSTREAM_IN_FLIGHT = Gauge(
    "sentient_upstream_in_flight",
    "Upstream attempts in progress per member of a load-balanced chain step, by provider and model.",
    ["provider", "model"],
    registry=REGISTRY,
    multiprocess_mode="livesum",
)
RATE_LIMIT_REJECTIONS = Counter(
    "sentient_rate_limit_rejections_total",
    "Requests refused by the rate limiter, by limit (requests|tokens|concurrency|provider) and scope.",
    ["limit", "scope"],
    registry=REGISTRY,
)
RATE_LIMIT_BACKEND_DEGRADED = Gauge(
    "sentient_rate_limit_backend_degraded",
    "1 while the Redis limiter is unreachable and the local fallback (failOpen) or refusal (failClosed) applies.",
    registry=REGISTRY,
    multiprocess_mode="livemax",
)
# Spend budgets (RateLimitPolicy ``budgets``), in currency units. ``subject`` is whom the budget
# counts: the agent's name, a tier name, an API key id (never the key), or a hashed JWT subject.
# Each replica reports the totals it last read from the store; take the max across replicas.
BUDGET_SPENT = Gauge(
    "sentient_budget_spent",
    "Spend of the current UTC day or month (window), by budget and subject, as last read from the store.",
    ["budget", "window", "subject"],
    registry=REGISTRY,
    multiprocess_mode="livemax",
)
BUDGET_REMAINING = Gauge(
    "sentient_budget_remaining",
    "Spend left in the current UTC day or month (window), by budget and subject.",
    ["budget", "window", "subject"],
    registry=REGISTRY,
    multiprocess_mode="livemin",
)
BUDGET_LIMIT = Gauge(
    "sentient_budget_limit",
    "Spend limit of a budget per UTC day or month (window), in its currency.",
    ["budget", "window", "currency"],
    registry=REGISTRY,
    multiprocess_mode="livemax",
)
BUDGET_REJECTIONS = Counter(
    "sentient_budget_rejections_total",
    "Requests refused because their worst-case cost did not fit a spend budget, by budget and window.",
    ["budget", "window"],
    registry=REGISTRY,
)
AUTHZ_DENIALS = Counter(
    "sentient_authz_denials_total",
    "Authenticated callers refused by their roles (403), by reason and route.",
    ["reason", "route"],
    registry=REGISTRY,
)
AUTH_FAILURES = Counter(
    "sentient_auth_failures_total",
    "Rejected callers, by reason.",
    ["reason"],
    registry=REGISTRY,
)
CONFIG_RELOADS = Counter(
    "sentient_config_reloads_total",
    "Hot reloads of config or credentials, by what changed (config|credentials) and result (ok|error).",
    ["kind", "result"],
    registry=REGISTRY,
)
ACTIVE_SESSIONS = Gauge(
    "sentient_sessions_active",
    "Sessions held in the memory store.",
    registry=REGISTRY,
    multiprocess_mode="livesum",
)
SESSION_STORE_DURATION = Histogram(
    "sentient_session_store_duration_seconds",
    "Time of one session load or save (failed ones included), by store (memory|redis|postgres) "
    "and operation (load|save).",
    ["store", "operation"],
    buckets=(0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5),
    registry=REGISTRY,
)
SESSION_STORE_ERRORS = Counter(
    "sentient_session_store_errors_total",
    "Session loads or saves that failed (the request went on without history, or without keeping "
    "the turn), by store and operation.",
    ["store", "operation"],
    registry=REGISTRY,
)
AGENT_ERRORS = Counter(
    "sentient_agent_errors_total",
    "Responses that ended with an error event after the agent started, by route and error code "
    "(codes outside the usual HTTP set are counted as 'other').",
    ["route", "code"],
    registry=REGISTRY,
)
CLIENT_DISCONNECTS = Counter(
    "sentient_client_disconnects_total",
    "Requests whose client went away before the response ended (the upstream call is cancelled).",
    ["route"],
    registry=REGISTRY,
)
HTTP_REFUSALS = Counter(
    "sentient_http_refusals_total",
    "Connections cut off by the server's limits on slow and greedy clients, by reason: header_timeout, "
    "body_timeout, header_too_large, too_many_connections, too_many_pipelined, send_timeout (server.limits).",
    ["reason"],
    registry=REGISTRY,
)
GUARDRAIL_VERDICTS = Counter(
    "sentient_guardrail_verdicts_total",
    "Guardrail check results, by check name (from the config), stage (input|output) and action "
    "(pass|block|redact|flag|error: a moderation call that failed open).",
    ["check", "stage", "action"],
    registry=REGISTRY,
)
GUARDRAIL_DURATION = Histogram(
    "sentient_guardrail_duration_seconds",
    "Time spent in the guardrail checks of one request stage, by stage (input|output).",
    ["stage"],
    buckets=(0.00005, 0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.1, 0.5, 1, 5),
    registry=REGISTRY,
)
CACHE_LOOKUPS = Counter(
    "sentient_cache_lookups_total",
    "Response-cache lookups by result (hit, miss, bypass): the hit ratio is hit / (hit + miss).",
    ["result"],
    registry=REGISTRY,
)
CACHE_SAVED_TOKENS = Counter(
    "sentient_cache_saved_tokens_total",
    "Upstream tokens (input + output) not spent because the answer came from the response cache.",
    registry=REGISTRY,
)
CACHE_STORES = Counter(
    "sentient_cache_stores_total",
    "Answers offered to the response cache, by result (stored, too_large, error).",
    ["result"],
    registry=REGISTRY,
)
CACHE_BACKEND_ERRORS = Counter(
    "sentient_cache_backend_errors_total",
    "Response-cache backend failures (Redis unreachable) by operation; the request went on as a miss.",
    ["op"],
    registry=REGISTRY,
)
CACHE_EVICTIONS = Counter(
    "sentient_cache_evictions_total",
    "Entries the memory backend dropped to stay within its entry and byte bounds.",
    registry=REGISTRY,
)
CACHE_ENTRIES = Gauge(
    "sentient_cache_entries",
    "Entries held by the memory backend of the response cache.",
    registry=REGISTRY,
    multiprocess_mode="livesum",
)
CACHE_BYTES = Gauge(
    "sentient_cache_bytes",
    "Bytes of answers held by the memory backend of the response cache.",
    registry=REGISTRY,
    multiprocess_mode="livesum",
)
AUDIT_SINK_RECORDS = Counter(
    "sentient_audit_sink_records_total",
    "Audit records per SIEM sink (name from the config) and outcome: buffered (appended to its "
    "spool), shipped (acknowledged by the receiver), dropped_buffer_full (the newest records, while "
    "the spool was at its cap), dropped_rejected (refused by the receiver as malformed), "
    "dropped_io_error (the spool could not be written).",
    ["sink", "outcome"],
    registry=REGISTRY,
)
AUDIT_SINK_UP = Gauge(
    "sentient_audit_sink_up",
    "1 when the last send to the SIEM sink succeeded, 0 while it fails (records are buffered).",
    ["sink"],
    registry=REGISTRY,
    multiprocess_mode="livemin",
)
AUDIT_SINK_BUFFER_BYTES = Gauge(
    "sentient_audit_sink_buffer_bytes",
    "Bytes of the SIEM sink's spool on disk (its cap is the sink's maxBufferMiB).",
    ["sink"],
    registry=REGISTRY,
    multiprocess_mode="livesum",
)
AUDIT_SINK_BUFFER_RECORDS = Gauge(
    "sentient_audit_sink_buffer_records",
    "Audit records waiting in the SIEM sink's spool.",
    ["sink"],
    registry=REGISTRY,
    multiprocess_mode="livesum",
)
