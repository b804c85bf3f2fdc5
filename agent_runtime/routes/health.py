"""Probes and descriptions: ``/live``, ``/ready``, ``/health``, ``/info`` and ``/metrics``.

None of them authenticates (Kubernetes probes and Prometheus scrape them) and
none counts as in-flight work, but they go through the pipeline like every
route, so their requests are measured with their real latency.
"""

from __future__ import annotations

from prometheus_client import CONTENT_TYPE_LATEST

from agent_runtime import metrics, protocol
from agent_runtime.http import Exchange
from agent_runtime.pipeline import Call, Refusal, Route

_GET = ("GET", "HEAD")
# Unauthenticated: the chain's state, never where its upstreams are; which providers and models
# they are only when the agent reveals them (llm.revealProvider). Entries stay in chain order.
_PRIVATE_PROVIDER_FIELDS = frozenset({"endpoint"})
_INTERNAL_PROVIDER_FIELDS = frozenset({"provider", "model", "type"})


async def json_errors(call: Call, refusal: Refusal) -> None:
    """A plain JSON error: ``{"error": message, "code": code}``."""
    r = refusal
    await call.ex.json(r.status, {"error": r.message, "code": r.code}, r.extra, r.close)


async def live(call: Call) -> None:
    """The process serves requests."""
    await call.ex.json(200, {"status": "alive"})


async def ready(call: Call) -> None:
    """Started, not draining, and a provider is usable."""
    is_ready, reason = call.runtime.readiness()
    await call.ex.json(200 if is_ready else 503, {"ready": is_ready, "reason": reason})


async def health(call: Call) -> None:
    """Detail of the runtime's state for humans and dashboards."""
    runtime = call.runtime
    is_ready, reason = runtime.readiness()
    config = runtime.config
    limiter = runtime.limiter
    hidden = (
        _PRIVATE_PROVIDER_FIELDS
        if config.llm.reveal_provider
        else _PRIVATE_PROVIDER_FIELDS | _INTERNAL_PROVIDER_FIELDS
    )
    body = {
        "status": "ok" if is_ready else ("draining" if runtime.draining else "degraded"),
        "reason": reason,
        "agent": {"name": config.agent.name, "namespace": config.agent.namespace},
        "in_flight": runtime.in_flight,
        "providers": [
            {"index": index} | {k: v for k, v in provider.items() if k not in hidden}
            for index, provider in enumerate(runtime.llm.snapshot() if runtime.llm is not None else [])
        ],
        "rate_limit": {
            "policy": config.rate_limit.policy if config.rate_limit else None,
            "degraded": bool(limiter is not None and limiter.degraded),
        },
        "sessions": {"store": config.sessions.store},
        "credentials_generation": runtime.credentials.generation,
    }
    await call.ex.json(200, body)


async def info(call: Call) -> None:
    """The agent card."""
    agent = call.runtime.config.agent
    await call.ex.json(
        200,
        {
            "name": agent.name,
            "namespace": agent.namespace,
            "description": agent.description,
            "capabilities": agent.capabilities,
            "protocol": {"name": "sentient-agent", "schema_version": protocol.SCHEMA_VERSION},
            "endpoints": {
                "assist": "/assist",
                "chat_completions": "/v1/chat/completions",
                "models": "/v1/models",
                "websocket": "/ws",
            },
        },
    )


async def write_metrics(ex: Exchange) -> None:
    """Prometheus exposition of the runtime's registry."""
    await ex.raw(200, CONTENT_TYPE_LATEST, metrics.exposition())


async def metrics_route(call: Call) -> None:
    """``/metrics`` on the main port (when no metrics port is set)."""
    await write_metrics(call.ex)


LIVE = Route(path="/live", methods=_GET, errors=json_errors, run=live)
READY = Route(path="/ready", methods=_GET, errors=json_errors, run=ready)
HEALTH = Route(path="/health", methods=_GET, errors=json_errors, run=health)
INFO = Route(path="/info", methods=_GET, errors=json_errors, run=info)
METRICS = Route(path="/metrics", methods=_GET, errors=json_errors, run=metrics_route)
