"""Fake Anthropic messages upstream (``/v1/messages``), real HTTP and SSE."""

from __future__ import annotations

import json
import uuid
from typing import Any

from starlette.requests import Request

from agent_runtime.testing.wire import WireFormat


def _event(name: str, obj: dict[str, Any]) -> bytes:
    return f"event: {name}\ndata: ".encode() + json.dumps(obj, separators=(",", ":")).encode() + b"\n\n"


class AnthropicWire(WireFormat):
    """Messages API: ``x-api-key``, ``message`` objects, named SSE events."""

    kind = "anthropic"
    paths = ("/v1/messages", "/messages")

    def api_key_of(self, request: Request) -> str | None:
        """The ``x-api-key`` header."""
        return request.headers.get("x-api-key")

    def error(self, status: int, message: str, error_type: str) -> dict[str, Any]:
        """Anthropic's error object."""
        kind = {401: "authentication_error", 429: "rate_limit_error", 529: "overloaded_error"}.get(status)
        if kind is None:
            kind = "api_error" if status >= 500 else error_type
        return {"type": "error", "error": {"type": kind, "message": message}}

    def completion(self, model: str, text: str, input_tokens: int, output_tokens: int) -> dict[str, Any]:
        """A ``message``."""
        return {
            "id": f"msg_{uuid.uuid4().hex[:24]}",
            "type": "message",
            "role": "assistant",
            "model": model,
            "content": [{"type": "text", "text": text}],
            "stop_reason": "end_turn",
            "stop_sequence": None,
            "usage": {"input_tokens": input_tokens, "output_tokens": output_tokens},
        }

    def stream_head(self, model: str, input_tokens: int) -> list[bytes]:
        """``message_start``, ``content_block_start``, ``ping``."""
        return [
            _event(
                "message_start",
                {
                    "type": "message_start",
                    "message": {
                        "id": "msg_fake",
                        "type": "message",
                        "role": "assistant",
                        "content": [],
                        "model": model,
                        "stop_reason": None,
                        "stop_sequence": None,
                        "usage": {"input_tokens": input_tokens, "output_tokens": 1},
                    },
                },
            ),
            _event(
                "content_block_start",
                {"type": "content_block_start", "index": 0, "content_block": {"type": "text", "text": ""}},
            ),
            _event("ping", {"type": "ping"}),
        ]

    def stream_text(self, model: str, text: str) -> bytes:
        """A ``content_block_delta`` with a ``text_delta``."""
        return _event(
            "content_block_delta",
            {"type": "content_block_delta", "index": 0, "delta": {"type": "text_delta", "text": text}},
        )

    def stream_tail(self, model: str, input_tokens: int, output_tokens: int, usage: bool) -> list[bytes]:
        """``content_block_stop``, ``message_delta`` (stop reason, usage), ``message_stop``."""
        return [
            _event("content_block_stop", {"type": "content_block_stop", "index": 0}),
            _event(
                "message_delta",
                {
                    "type": "message_delta",
                    "delta": {"stop_reason": "end_turn", "stop_sequence": None},
                    "usage": {"output_tokens": output_tokens},
                },
            ),
            _event("message_stop", {"type": "message_stop"}),
        ]
