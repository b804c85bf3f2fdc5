"""Anthropic messages API.

Streaming events (each ``event: <type>`` + ``data: {"type": <type>, ...}``):
``message_start`` (input tokens), ``content_block_start``, ``ping``,
``content_block_delta`` (``text_delta``), ``content_block_stop``,
``message_delta`` (stop reason, cumulative output tokens), ``message_stop``;
``error`` (e.g. ``overloaded_error``) may arrive mid-stream. The ``type``
field repeats the event name, so only ``data:`` lines are needed.
"""

from __future__ import annotations

from typing import Any

from agent_runtime.llm.errors import upstream_error
from agent_runtime.llm.providers.base import (
    Adapter,
    ParsedCompletion,
    StreamState,
    loads_json,
    safe_token,
    with_continuation,
)
from agent_runtime.llm.types import ChatRequest

API_VERSION = "2023-06-01"
# The messages API requires max_tokens; used when neither request nor config sets it.
DEFAULT_MAX_TOKENS = 1024

_IN_STREAM_ERROR_CLASS = {"rate_limit_error": "429", "overloaded_error": "5xx", "api_error": "5xx"}

# Stop reasons in OpenAI's words, the runtime's one vocabulary: the OpenAI-compatible route must
# answer with OpenAI's values, and callers should not learn from "end_turn" which upstream answered.
_FINISH_REASONS = {
    "end_turn": "stop",
    "stop_sequence": "stop",
    "pause_turn": "stop",
    "max_tokens": "length",
    "model_context_window_exceeded": "length",
    "tool_use": "tool_calls",
    "refusal": "content_filter",
}


def finish_reason(stop_reason: object) -> str | None:
    """OpenAI's ``finish_reason`` for an Anthropic ``stop_reason`` (an unknown one is ``stop``)."""
    if not stop_reason:
        return None
    return _FINISH_REASONS.get(str(stop_reason), "stop")


class AnthropicAdapter(Adapter):
    """The ``/v1/messages`` wire format."""

    name = "anthropic"
    format_headers = {"anthropic-version": API_VERSION}
    key_header = "x-api-key"
    key_prefix = ""

    def url(self, endpoint: str) -> str:
        """``<endpoint>/v1/messages``, accepting an endpoint given with or without ``/v1``."""
        base = endpoint.rstrip("/")
        if base.endswith("/v1"):
            return base + "/messages"
        return base + "/v1/messages"

    def body(
        self,
        request: ChatRequest,
        *,
        model: str,
        max_tokens: int | None,
        temperature: float | None,
        top_p: float | None,
        stream: bool,
        partial: str | None,
    ) -> dict[str, Any]:
        """Messages request: system turns go to the top-level ``system`` field."""
        messages = with_continuation(request.messages, partial)
        system = "\n\n".join(m.content for m in messages if m.role == "system")
        body: dict[str, Any] = {
            "model": model,
            "max_tokens": max_tokens if max_tokens is not None else DEFAULT_MAX_TOKENS,
            "messages": [{"role": m.role, "content": m.content} for m in messages if m.role != "system"],
            "stream": stream,
        }
        if system:
            body["system"] = system
        if temperature is not None:
            # Anthropic's range is 0..1 where OpenAI's is 0..2.
            body["temperature"] = min(temperature, 1.0)
        if top_p is not None:
            body["top_p"] = top_p
        if request.stop:
            body["stop_sequences"] = request.stop
        return body

    def parse_data(self, payload: bytes, state: StreamState) -> str | None:
        """One streaming event."""
        event = loads_json(payload)
        kind = event.get("type")
        if kind == "content_block_delta":
            delta = event.get("delta") or {}
            if delta.get("type") == "text_delta":
                text = delta.get("text")
                return str(text) if text else None
            return None
        if kind == "message_start":
            message = event.get("message") or {}
            usage = message.get("usage") or {}
            model = message.get("model")
            state.model = model if isinstance(model, str) else None
            state.input_tokens = int(usage.get("input_tokens") or 0)
            state.output_tokens = int(usage.get("output_tokens") or 0)
            return None
        if kind == "message_delta":
            reason = finish_reason((event.get("delta") or {}).get("stop_reason"))
            if reason:
                state.finish_reason = reason
            usage = event.get("usage") or {}
            if usage.get("output_tokens") is not None:
                state.output_tokens = int(usage["output_tokens"])
            if usage.get("input_tokens"):
                state.input_tokens = int(usage["input_tokens"])
            return None
        if kind == "message_stop":
            state.done = True
            return None
        if kind == "error":
            error = event.get("error") or {}
            error_type = safe_token(error.get("type"))
            raise upstream_error(
                _IN_STREAM_ERROR_CLASS.get(error_type, "5xx"), f"error in stream: {error_type}"
            )
        return None

    def parse_completion(self, data: Any) -> ParsedCompletion:
        """A ``message`` object."""
        text = "".join(
            block.get("text", "") for block in data.get("content") or [] if block.get("type") == "text"
        )
        usage = data.get("usage") or {}
        return ParsedCompletion(
            text=text,
            finish_reason=finish_reason(data.get("stop_reason")),
            input_tokens=int(usage.get("input_tokens") or 0),
            output_tokens=int(usage.get("output_tokens") or 0),
            model=data.get("model") if isinstance(data.get("model"), str) else None,
        )
