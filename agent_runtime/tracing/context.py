"""The trace of the request being served, as a context variable (no OpenTelemetry import).

The pipeline sets it around a traced request; the work task of the request copies it when it
is created, so the failover loop deep inside the agent finds the request span without any
parameter passed through the agent's own code.
"""

from __future__ import annotations

from contextvars import ContextVar

from agent_runtime.tracing.base import RequestTrace

CURRENT: ContextVar[RequestTrace | None] = ContextVar("sentient_request_trace", default=None)


def current() -> RequestTrace | None:
    """The trace of the request in this context, or None (tracing off, or outside a request)."""
    return CURRENT.get()
