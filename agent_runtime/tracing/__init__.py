"""OpenTelemetry traces of the agent runtime, sent over OTLP; off unless the agent's config asks.

One SERVER span per request (``POST /v1/chat/completions``, ``POST /assist``, ``/ws``), with one
CLIENT child span per upstream attempt, named and attributed after the OpenTelemetry GenAI
semantic conventions (``attributes.py``): retries and failovers show as sibling attempt spans
with their provider, attempt number and error type. The caller's W3C trace context
(``traceparent``/``tracestate``) is the parent of the request span, and each attempt's own
context goes to the upstream in the same headers.

Cost when off: the OpenTelemetry SDK is never imported (:func:`build_tracing` imports
``otel.py`` only for a config that has tracing); the hot path reads one attribute in the
pipeline and one context variable in the failover loop (``context.py``).

Never blocking: finished spans go to a bounded queue that a background thread exports in
batches; a slow or unreachable collector costs dropped spans, never a slower request.
"""

from __future__ import annotations

from collections.abc import Callable

from agent_runtime.config import AgentInfo, TracingConfig
from agent_runtime.tracing.base import AttemptTrace, RequestTrace, Tracing
from agent_runtime.tracing.context import CURRENT, current

__all__ = ["CURRENT", "AttemptTrace", "RequestTrace", "Tracing", "build_tracing", "current"]


def build_tracing(
    config: TracingConfig | None, agent: AgentInfo, read_file: Callable[[str], str | None]
) -> Tracing | None:
    """The tracer of ``config`` (None when tracing is off); imports the SDK only when on."""
    if config is None:
        return None
    from agent_runtime.tracing.otel import OtelTracing

    return OtelTracing(config, agent, read_file)
