"""Fake OpenAI chat completions upstream (``/v1/chat/completions``), real HTTP and SSE."""

from __future__ import annotations

import json
import time
import uuid
from typing import Any

from starlette.requests import Request

from agent_runtime.testing.wire import WireFormat


def _frame(obj: dict[str, Any]) -> bytes:
    return b"data: " + json.dumps(obj, separators=(",", ":")).encode() + b"\n\n"


class OpenAIWire(WireFormat):
    """Chat completions: Bearer auth, ``chat.completion(.chunk)`` objects, ``data: [DONE]``."""

    kind = "openai"
    paths = ("/v1/chat/completions", "/chat/completions")

    def api_key_of(self, request: Request) -> str | None:
        """The Bearer token."""
        auth = request.headers.get("authorization")
        if auth and auth.lower().startswith("bearer "):
            return auth[7:].strip()
        return None

    def error(self, status: int, message: str, error_type: str) -> dict[str, Any]:
        """OpenAI's error object."""
        code = "invalid_api_key" if status == 401 else None
        return {"error": {"message": message, "type": error_type, "param": None, "code": code}}

    def completion(self, model: str, text: str, input_tokens: int, output_tokens: int) -> dict[str, Any]:
        """A ``chat.completion``."""
        return {
            "id": f"chatcmpl-{uuid.uuid4().hex[:24]}",
            "object": "chat.completion",
            "created": int(time.time()),
            "model": model,
            "choices": [
                {
                    "index": 0,
                    "message": {"role": "assistant", "content": text},
                    "logprobs": None,
                    "finish_reason": "stop",
                }
            ],
            "usage": {
                "prompt_tokens": input_tokens,
                "completion_tokens": output_tokens,
                "total_tokens": input_tokens + output_tokens,
            },
        }

    def _chunk(self, model: str, delta: dict[str, Any], finish: str | None) -> dict[str, Any]:
        return {
            "id": "chatcmpl-fake",
            "object": "chat.completion.chunk",
            "created": int(time.time()),
            "model": model,
            "choices": [{"index": 0, "delta": delta, "logprobs": None, "finish_reason": finish}],
        }

    def stream_head(self, model: str, input_tokens: int) -> list[bytes]:
        """The role chunk."""
        return [_frame(self._chunk(model, {"role": "assistant", "content": ""}, None))]

    def stream_text(self, model: str, text: str) -> bytes:
        """A content chunk."""
        return _frame(self._chunk(model, {"content": text}, None))

    def stream_tail(self, model: str, input_tokens: int, output_tokens: int, usage: bool) -> list[bytes]:
        """Finish chunk, usage chunk (empty choices) when asked, ``[DONE]``."""
        frames = [_frame(self._chunk(model, {}, "stop"))]
        if usage:
            frames.append(
                _frame(
                    {
                        "id": "chatcmpl-fake",
                        "object": "chat.completion.chunk",
                        "created": int(time.time()),
                        "model": model,
                        "choices": [],
                        "usage": {
                            "prompt_tokens": input_tokens,
                            "completion_tokens": output_tokens,
                            "total_tokens": input_tokens + output_tokens,
                        },
                    }
                )
            )
        frames.append(b"data: [DONE]\n\n")
        return frames

    def wants_usage(self, body: dict[str, Any]) -> bool:
        """``stream_options.include_usage``."""
        options = body.get("stream_options") or {}
        return bool(options.get("include_usage"))
