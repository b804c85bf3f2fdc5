"""What a wire format adapter provides to the manager.

An adapter is stateless and does no I/O: it builds the upstream request and
parses upstream bytes. The manager owns the HTTP client, timeouts, retries
and failover, so both wire formats behave the same way.
"""

from __future__ import annotations

import json
import re
from abc import ABC, abstractmethod
from collections.abc import Mapping
from typing import Any, ClassVar

from agent_runtime.llm.errors import UpstreamError, class_of_status, upstream_error
from agent_runtime.llm.types import CONTINUATION_PROMPT, ChatMessage, ChatRequest

_SAFE_TOKEN = re.compile(r"[A-Za-z0-9_.:-]{1,64}")
_raw_decode = json.JSONDecoder().raw_decode


def loads_json(data: bytes) -> Any:
    """``json.loads(data)``, faster for the usual upstream payload (a UTF-8 object, no padding).

    ``json.loads`` on bytes first detects the encoding in Python code and then matches
    whitespace around the value: together more than the decoding of a streamed chunk
    itself. Anything unusual (another encoding, a BOM, whitespace, an error) takes
    ``json.loads``, so the result and the errors are the same.
    """
    if data[:1] == b"{":
        try:
            text = data.decode("utf-8", "surrogatepass")
            value, end = _raw_decode(text)
        except ValueError:
            return json.loads(data)
        if end == len(text):
            return value
    return json.loads(data)


def with_continuation(messages: list[ChatMessage], partial: str | None) -> list[ChatMessage]:
    """The conversation, extended so that the model continues ``partial``.

    The partial answer goes back as an assistant turn followed by a user turn
    asking to continue: accepted by every chat model, unlike an assistant
    prefill (LiteLLM's approach), which newer models refuse with a 400.
    """
    if not partial:
        return messages
    return [
        *messages,
        ChatMessage(role="assistant", content=partial),
        ChatMessage(role="user", content=CONTINUATION_PROMPT),
    ]


class StreamState:
    """What one streamed answer told us besides its text."""

    __slots__ = ("done", "finish_reason", "input_tokens", "model", "output_tokens")

    def __init__(self) -> None:
        self.done = False
        self.finish_reason: str | None = None
        self.input_tokens = 0
        self.output_tokens = 0
        # The model the upstream says answered (traces' gen_ai.response.model), when it says.
        self.model: str | None = None

    @property
    def complete(self) -> bool:
        """The upstream said the answer is over (end marker or a finish reason)."""
        return self.done or self.finish_reason is not None


class ParsedCompletion:
    """A parsed non-streamed answer."""

    __slots__ = ("finish_reason", "input_tokens", "model", "output_tokens", "text")

    def __init__(
        self,
        text: str,
        finish_reason: str | None,
        input_tokens: int,
        output_tokens: int,
        model: str | None = None,
    ) -> None:
        self.text = text
        self.finish_reason = finish_reason
        self.input_tokens = input_tokens
        self.output_tokens = output_tokens
        self.model = model


class Adapter(ABC):
    """One upstream wire format."""

    name: str
    # Headers of the wire format that the provider's configured ``defaultHeaders`` may override.
    format_headers: ClassVar[Mapping[str, str]] = {}
    # The API key goes in this header, after this prefix.
    key_header: ClassVar[str] = "authorization"
    key_prefix: ClassVar[str] = "Bearer "

    @abstractmethod
    def url(self, endpoint: str) -> str:
        """Full URL of the chat endpoint under the configured base URL."""

    def headers(
        self, api_key: str | None, default_headers: dict[str, str], *, stream: bool
    ) -> dict[str, str]:
        """Request headers: JSON in, JSON or SSE out, the API key."""
        headers = {
            **self.format_headers,
            **default_headers,
            "content-type": "application/json",
            "accept": "text/event-stream" if stream else "application/json",
        }
        if stream:
            # The manager reads the stream undecoded, line by line.
            headers["accept-encoding"] = "identity"
        if api_key:
            headers[self.key_header] = self.key_prefix + api_key
        return headers

    @abstractmethod
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
        """JSON body of one attempt; ``partial`` is the answer so far when continuing a stream."""

    @abstractmethod
    def parse_data(self, payload: bytes, state: StreamState) -> str | None:
        """Handle one SSE ``data:`` payload (stripped); return answer text, if it carries some.

        Raises :class:`UpstreamError` for an error reported inside the stream.
        """

    @abstractmethod
    def parse_completion(self, data: Any) -> ParsedCompletion:
        """Parse a non-streamed answer."""

    def error_for_status(self, status: int, body: bytes, retry_after: float | None) -> UpstreamError:
        """Error of a non-2xx response, with the upstream's error *type* only (never its message)."""
        kind = _error_type(body)
        detail = f"HTTP {status}" + (f" {kind}" if kind else "")
        return upstream_error(class_of_status(status), detail, status=status, retry_after=retry_after)


def _error_type(body: bytes) -> str | None:
    """The machine-readable error type/code of an upstream error body, if safe to repeat."""
    try:
        data = loads_json(body)
    except ValueError:
        return None
    error = data.get("error") if isinstance(data, dict) else None
    if not isinstance(error, dict):
        return None
    for key in ("type", "code"):
        value = error.get(key)
        if isinstance(value, str) and _SAFE_TOKEN.fullmatch(value):
            return value
    return None


def safe_token(value: object) -> str:
    """``value`` when it is a short identifier-like string, else a placeholder."""
    if isinstance(value, str) and _SAFE_TOKEN.fullmatch(value):
        return value
    return "error"
