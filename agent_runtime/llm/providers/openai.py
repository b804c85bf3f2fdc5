"""OpenAI chat completions, also spoken by vLLM, Ollama, llama.cpp and other compatible servers.

Streaming: ``data: {chat.completion.chunk}`` lines, then ``data: [DONE]``;
with ``stream_options.include_usage`` the last chunk before ``[DONE]`` has
empty ``choices`` and the ``usage`` of the whole answer. Some compatible
servers report errors in the stream as ``data: {"error": {...}}``.
"""

from __future__ import annotations

from typing import Any

from agent_runtime.llm.errors import ServerFailed
from agent_runtime.llm.providers.base import (
    Adapter,
    ParsedCompletion,
    StreamState,
    loads_json,
    safe_token,
    with_continuation,
)
from agent_runtime.llm.types import ChatRequest


class OpenAIAdapter(Adapter):
    """The ``/chat/completions`` wire format."""

    name = "openai"

    def url(self, endpoint: str) -> str:
        """``<endpoint>/chat/completions``; the endpoint includes the version (``.../v1``)."""
        return endpoint.rstrip("/") + "/chat/completions"

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
        """Chat completion request; usage requested in the stream."""
        messages = with_continuation(request.messages, partial)
        body: dict[str, Any] = {
            "model": model,
            "messages": [{"role": m.role, "content": m.content} for m in messages],
            "stream": stream,
        }
        if stream:
            body["stream_options"] = {"include_usage": True}
        if max_tokens is not None:
            body["max_tokens"] = max_tokens
        if temperature is not None:
            body["temperature"] = temperature
        if top_p is not None:
            body["top_p"] = top_p
        if request.stop:
            body["stop"] = request.stop
        return body

    def parse_data(self, payload: bytes, state: StreamState) -> str | None:
        """One ``chat.completion.chunk`` (or ``[DONE]``)."""
        if payload == b"[DONE]":
            state.done = True
            return None
        chunk = loads_json(payload)
        error = chunk.get("error")
        if error is not None:
            kind = safe_token(error.get("type") or error.get("code")) if isinstance(error, dict) else "error"
            raise ServerFailed(f"error in stream: {kind}")
        usage = chunk.get("usage")
        if usage:
            state.input_tokens = int(usage.get("prompt_tokens") or 0)
            state.output_tokens = int(usage.get("completion_tokens") or 0)
            # The usage chunk is the last one: the answering model is read once, not per chunk.
            model = chunk.get("model")
            state.model = model if isinstance(model, str) else None
        choices = chunk.get("choices")
        if not choices:
            return None
        choice = choices[0]
        reason = choice.get("finish_reason")
        if reason:
            state.finish_reason = reason
        delta = choice.get("delta")
        if delta:
            text = delta.get("content")
            if text:
                return str(text)
        return None

    def parse_completion(self, data: Any) -> ParsedCompletion:
        """A ``chat.completion`` object."""
        choice = data["choices"][0]
        message = choice.get("message") or {}
        usage = data.get("usage") or {}
        return ParsedCompletion(
            text=message.get("content") or "",
            finish_reason=choice.get("finish_reason"),
            input_tokens=int(usage.get("prompt_tokens") or 0),
            output_tokens=int(usage.get("completion_tokens") or 0),
            model=data.get("model") if isinstance(data.get("model"), str) else None,
        )
