"""The interface of one fake upstream's wire format (implemented by ``fake_openai`` and ``fake_anthropic``)."""

from __future__ import annotations

from typing import Any

from starlette.requests import Request


class WireFormat:
    """What differs between the fakes: paths, auth header, bodies, stream framing."""

    kind: str
    paths: tuple[str, ...]

    def api_key_of(self, request: Request) -> str | None:
        """The key the caller presented."""
        raise NotImplementedError

    def error(self, status: int, message: str, error_type: str) -> dict[str, Any]:
        """An error body."""
        raise NotImplementedError

    def completion(self, model: str, text: str, input_tokens: int, output_tokens: int) -> dict[str, Any]:
        """A non-streamed answer."""
        raise NotImplementedError

    def stream_head(self, model: str, input_tokens: int) -> list[bytes]:
        """SSE frames before the text."""
        raise NotImplementedError

    def stream_text(self, model: str, text: str) -> bytes:
        """One SSE frame of text."""
        raise NotImplementedError

    def stream_tail(self, model: str, input_tokens: int, output_tokens: int, usage: bool) -> list[bytes]:
        """SSE frames after the text (finish reason, usage, end marker)."""
        raise NotImplementedError

    def wants_usage(self, body: dict[str, Any]) -> bool:
        """Whether the caller asked for usage in the stream."""
        return True
