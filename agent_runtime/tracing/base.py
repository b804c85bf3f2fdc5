"""What the pipeline and the failover loop call on a trace: interfaces free of OpenTelemetry types."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Protocol

if TYPE_CHECKING:
    from agent_runtime.http import Exchange
    from agent_runtime.llm.entries import Entry
    from agent_runtime.llm.providers.base import StreamState
    from agent_runtime.llm.types import ChatRequest


class AttemptTrace(Protocol):
    """The span of one upstream attempt; exactly one of the three endings is called."""

    #: ``traceparent`` (and ``tracestate``) of this attempt, for the upstream request.
    headers: Mapping[str, str]

    def succeeded(self, state: StreamState, output: Sequence[str]) -> None:
        """The attempt answered: usage, finish reason and (when captured) the answer's text."""

    def failed(self, error_class: str, status: int | None) -> None:
        """The attempt failed with an upstream error of ``error_class``."""

    def abandoned(self) -> None:
        """The caller went away or the request was cancelled during the attempt."""


class RequestTrace(Protocol):
    """The server span of one request."""

    def attempt(
        self, entry: Entry, request: ChatRequest, number: int, position: int, streamed: bool
    ) -> AttemptTrace:
        """Start the span of attempt ``number`` (1-based) on chain entry ``position`` (0-based)."""

    def skipped(self, entry: Entry, error_class: str) -> None:
        """A chain entry was not attempted (circuit open, provider quota)."""

    def failover(self, source: Entry, target: Entry, phase: str, reason: str) -> None:
        """The failover loop moved from ``source`` to ``target``."""

    def end(self, status: int) -> None:
        """The response went out with HTTP ``status``: end the span."""


class Tracing(Protocol):
    """The tracer of one runtime config."""

    #: The text of the headers file when it was built (to notice a rotated header secret).
    headers_text: str | None

    def start_request(self, ex: Exchange, route: str) -> RequestTrace:
        """Start the server span of a request, child of the caller's trace context if any."""

    async def aclose(self) -> None:
        """Export what is queued (bounded by the export timeout) and stop the exporter thread."""
