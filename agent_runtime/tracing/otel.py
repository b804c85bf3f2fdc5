"""The tracer over the OpenTelemetry SDK: imported only when an agent's config turns tracing on."""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import threading
from collections.abc import Callable, Mapping, Sequence
from typing import TYPE_CHECKING, Any

import httpx
from opentelemetry.context import Context
from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter
from opentelemetry.sdk.resources import SERVICE_NAME, SERVICE_NAMESPACE, Resource
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import BatchSpanProcessor
from opentelemetry.sdk.trace.sampling import ParentBased, TraceIdRatioBased
from opentelemetry.trace import Span, SpanKind, Status, StatusCode, Tracer, set_span_in_context
from opentelemetry.trace.propagation.tracecontext import TraceContextTextMapPropagator

import agent_runtime.tracing.attributes as a
import agent_runtime.tracing.throttle as throttle
from agent_runtime.config import AgentInfo, TracingConfig, duration_seconds
from agent_runtime.tracing.base import AttemptTrace, RequestTrace

if TYPE_CHECKING:
    from agent_runtime.http import Exchange
    from agent_runtime.llm.entries import Entry
    from agent_runtime.llm.providers.base import StreamState
    from agent_runtime.llm.types import ChatRequest

log = logging.getLogger("agent_runtime.tracing")

_PROPAGATOR = TraceContextTextMapPropagator()
TRACES_PATH = "/v1/traces"
# How often the batch processor exports when its queue is not full.
SCHEDULE_DELAY_MS = 1000
MAX_EXPORT_BATCH = 512
# The longest a shutdown (a reload that replaces the tracer, SIGTERM) waits for the last export.
SHUTDOWN_WAIT = 2.0


def traces_url(endpoint: str) -> str:
    """The OTLP/HTTP traces URL: ``/v1/traces`` added to a base URL without a path."""
    url = httpx.URL(endpoint)
    if url.path in ("", "/"):
        return str(url.copy_with(path=TRACES_PATH))
    return endpoint


def parse_headers(text: str | None) -> dict[str, str]:
    """The exporter's headers from the headers file (a JSON object); values are never logged."""
    if not text or not text.strip():
        return {}
    try:
        data = json.loads(text)
    except ValueError:
        log.warning("tracing headers file is not JSON; exporting without headers")
        return {}
    if not isinstance(data, dict) or not all(isinstance(v, str) for v in data.values()):
        log.warning("tracing headers file is not an object of strings; exporting without headers")
        return {}
    # A line break in a header would start another one: refuse such an entry, name only its key.
    headers: dict[str, str] = {}
    for name, value in data.items():
        if any(c in name + value for c in "\r\n\0") or not name.strip():
            log.warning("tracing header %r has a control character; left out", name[:64])
            continue
        headers[name.strip().lower()] = value.strip()
    return headers


def _messages_json(messages: Sequence[tuple[str, str]], finish_reason: str | None = None) -> str:
    """Messages in the GenAI conventions' shape: role and text parts."""
    items: list[dict[str, Any]] = []
    for role, text in messages:
        item: dict[str, Any] = {"role": role, "parts": [{"type": "text", "content": text}]}
        if finish_reason is not None:
            item["finish_reason"] = finish_reason
        items.append(item)
    return json.dumps(items, ensure_ascii=False, separators=(",", ":"))


class OtelAttempt:
    """The CLIENT span of one upstream attempt."""

    __slots__ = ("_capture", "_model", "_span", "headers")

    def __init__(self, span: Span, model: str, capture: bool) -> None:
        self._span = span
        self._model = model
        self._capture = capture
        carrier: dict[str, str] = {}
        _PROPAGATOR.inject(carrier, context=set_span_in_context(span))
        self.headers: Mapping[str, str] = carrier

    def succeeded(self, state: StreamState, output: Sequence[str]) -> None:
        """Usage, finish reason, the answering model and (captured only) the answer."""
        span = self._span
        if span.is_recording():
            attrs: dict[str, Any] = {
                a.GEN_AI_RESPONSE_MODEL: state.model or self._model,
                a.GEN_AI_USAGE_INPUT_TOKENS: state.input_tokens,
                a.GEN_AI_USAGE_OUTPUT_TOKENS: state.output_tokens,
            }
            if state.finish_reason:
                attrs[a.GEN_AI_RESPONSE_FINISH_REASONS] = (state.finish_reason,)
            if self._capture:
                attrs[a.GEN_AI_OUTPUT_MESSAGES] = _messages_json(
                    [("assistant", "".join(output))], state.finish_reason or "stop"
                )
            span.set_attributes(attrs)
        span.end()

    def failed(self, error_class: str, status: int | None) -> None:
        """``error.type`` is the failover loop's error class (429, 5xx, timeout, reset, ...)."""
        span = self._span
        if span.is_recording():
            span.set_attribute(a.ERROR_TYPE, error_class)
            if status is not None:
                span.set_attribute(a.HTTP_RESPONSE_STATUS_CODE, status)
            span.set_status(Status(StatusCode.ERROR, error_class))
        span.end()

    def abandoned(self) -> None:
        """Cancelled: the caller went away, or a drain ended the request."""
        self.failed("cancelled", None)


class OtelRequest:
    """The SERVER span of one request and the context its attempts are children of."""

    __slots__ = ("_capture", "_context", "_recording", "_span", "_tracer")

    def __init__(self, tracer: Tracer, span: Span, capture: bool) -> None:
        self._tracer = tracer
        self._span = span
        self._capture = capture
        self._context: Context = set_span_in_context(span)
        # Children of an unsampled request are unsampled too (parent-based sampling).
        self._recording = span.is_recording()

    def attempt(
        self, entry: Entry, request: ChatRequest, number: int, position: int, streamed: bool
    ) -> AttemptTrace:
        """Start the span of one attempt, named ``chat {model}`` as the conventions say."""
        config = entry.config
        if not self._recording:
            # Only its context matters (the upstream's traceparent): no attributes to build.
            span = self._tracer.start_span(config.model, context=self._context, kind=SpanKind.CLIENT)
            return OtelAttempt(span, config.model, False)
        provider = a.PROVIDER_NAMES.get(config.type, config.type)
        url = entry.url
        attrs: dict[str, Any] = {
            a.GEN_AI_OPERATION_NAME: a.OPERATION_CHAT,
            a.GEN_AI_PROVIDER_NAME: provider,
            a.GEN_AI_SYSTEM: provider,
            a.GEN_AI_REQUEST_MODEL: config.model,
            a.SERVER_ADDRESS: url.host,
            a.SERVER_PORT: url.port or (443 if url.scheme == "https" else 80),
            a.PROVIDER_ID: config.id,
            a.ATTEMPT: number,
            a.CHAIN_POSITION: position,
            a.STREAMED: streamed,
        }
        params = entry.params
        max_tokens = request.max_tokens if request.max_tokens is not None else params.max_tokens
        temperature = request.temperature if request.temperature is not None else params.temperature
        top_p = request.top_p if request.top_p is not None else params.top_p
        if max_tokens is not None:
            attrs[a.GEN_AI_REQUEST_MAX_TOKENS] = max_tokens
        if temperature is not None:
            attrs[a.GEN_AI_REQUEST_TEMPERATURE] = temperature
        if top_p is not None:
            attrs[a.GEN_AI_REQUEST_TOP_P] = top_p
        if self._capture:
            if request.stop:
                attrs[a.GEN_AI_REQUEST_STOP_SEQUENCES] = tuple(request.stop)
            attrs[a.GEN_AI_INPUT_MESSAGES] = _messages_json([(m.role, m.content) for m in request.messages])
        span = self._tracer.start_span(
            f"{a.OPERATION_CHAT} {config.model}",
            context=self._context,
            kind=SpanKind.CLIENT,
            attributes=attrs,
        )
        return OtelAttempt(span, config.model, self._capture)

    def skipped(self, entry: Entry, error_class: str) -> None:
        """An event on the request span: the entry was not tried (breaker open, quota)."""
        self._span.add_event(
            a.SKIPPED_EVENT,
            {
                a.PROVIDER_ID: entry.config.id,
                a.GEN_AI_REQUEST_MODEL: entry.config.model,
                a.ERROR_TYPE: error_class,
            },
        )

    def failover(self, source: Entry, target: Entry, phase: str, reason: str) -> None:
        """An event on the request span: from which entry to which, when, and why."""
        self._span.add_event(
            a.FAILOVER_EVENT,
            {
                a.FAILOVER_FROM: source.config.id,
                a.FAILOVER_TO: target.config.id,
                a.FAILOVER_PHASE: phase,
                a.ERROR_TYPE: reason,
            },
        )

    def end(self, status: int) -> None:
        """HTTP semantics: a 5xx is an error of the server span, a 4xx is not."""
        span = self._span
        if span.is_recording():
            span.set_attribute(a.HTTP_RESPONSE_STATUS_CODE, status)
            if status >= 500:
                span.set_attribute(a.ERROR_TYPE, str(status))
                span.set_status(Status(StatusCode.ERROR))
        span.end()


class OtelTracing:
    """A tracer provider of its own (never the process-wide global one), exporting over OTLP/HTTP."""

    def __init__(
        self, config: TracingConfig, agent: AgentInfo, read_file: Callable[[str], str | None]
    ) -> None:
        throttle.install()
        self.config = config
        self.agent_name = agent.name
        self.headers_text = read_file(config.headers_file) if config.headers_file else None
        timeout = duration_seconds(config.timeout)
        exporter = OTLPSpanExporter(
            endpoint=traces_url(config.endpoint), headers=parse_headers(self.headers_text), timeout=timeout
        )
        resource = Resource.create({SERVICE_NAME: agent.name, SERVICE_NAMESPACE: agent.namespace})
        self._provider = TracerProvider(
            resource=resource, sampler=ParentBased(TraceIdRatioBased(config.sampling_ratio))
        )
        # Bounded queue, exported by a background thread: a full queue drops spans, never waits.
        self._provider.add_span_processor(
            BatchSpanProcessor(
                exporter,
                max_queue_size=config.max_queue_size,
                schedule_delay_millis=SCHEDULE_DELAY_MS,
                max_export_batch_size=min(MAX_EXPORT_BATCH, config.max_queue_size),
                export_timeout_millis=int(timeout * 1000),
            )
        )
        self._tracer = self._provider.get_tracer("agent_runtime")
        self._capture = config.capture_content

    def start_request(self, ex: Exchange, route: str) -> RequestTrace:
        """The SERVER span ``{method} {route}``, child of the caller's ``traceparent`` when valid."""
        parent = _PROPAGATOR.extract(ex.headers) if "traceparent" in ex.headers else None
        span = self._tracer.start_span(
            f"{ex.method} {route}",
            context=parent,
            kind=SpanKind.SERVER,
            attributes={
                a.HTTP_REQUEST_METHOD: ex.method,
                a.HTTP_ROUTE: route,
                a.URL_PATH: route,
                a.GEN_AI_AGENT_NAME: self.agent_name,
                a.REQUEST_ID: ex.request_id,
            },
        )
        return OtelRequest(self._tracer, span, self._capture)

    def force_flush(self, timeout: float = 5.0) -> bool:
        """Export every finished span now (tests, benchmarks); False when it did not finish in time."""
        return self._provider.force_flush(int(timeout * 1000))

    async def aclose(self) -> None:
        """Export what is queued and stop, waiting at most ``SHUTDOWN_WAIT`` seconds.

        The SDK's shutdown joins its export thread for up to 30 s when the collector hangs; it
        runs in a daemon thread of its own, so neither the event loop nor the process exit waits
        on it for longer than that.
        """
        loop = asyncio.get_running_loop()
        done: asyncio.Future[None] = loop.create_future()

        def finished() -> None:
            if not done.done():
                done.set_result(None)

        def shutdown() -> None:
            try:
                self._provider.shutdown()
            finally:
                with contextlib.suppress(RuntimeError):  # the loop may be closed by now
                    loop.call_soon_threadsafe(finished)

        threading.Thread(target=shutdown, name="otel-shutdown", daemon=True).start()
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(asyncio.shield(done), SHUTDOWN_WAIT)
