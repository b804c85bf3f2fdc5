"""Value types of the LLM layer: requests, streamed events, results (errors: ``errors.py``).

Plain slotted dataclasses rather than pydantic models: one of them is created
per streamed chunk, and the HTTP layer validates caller input before it gets
here.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal

Role = Literal["system", "user", "assistant"]
SwitchPhase = Literal["before_first_token", "mid_stream"]

# Sent after the partial assistant text when a stream moves to another
# provider mid-answer. A trailing user turn works on every model (unlike an
# assistant "prefill", which some models reject with a 400), and the fake
# upstreams recognise it to answer with the rest of their answer.
CONTINUATION_PROMPT = (
    "Your previous answer was cut off. Continue it exactly where it stopped, "
    "without repeating any of it and without any preamble."
)


@dataclass(slots=True, frozen=True)
class ChatMessage:
    """One turn of a conversation."""

    role: Role
    content: str


@dataclass(slots=True)
class ChatRequest:
    """What the agent asks the model; unset sampling fields take the config's parameters."""

    messages: list[ChatMessage]
    max_tokens: int | None = None
    temperature: float | None = None
    top_p: float | None = None
    stop: list[str] | None = None
    # Input + output tokens expected, charged against provider quotas
    # (ProviderGate); estimated from the text when unset.
    estimated_tokens: int | None = None


@dataclass(slots=True, frozen=True)
class TextDelta:
    """A piece of the answer."""

    text: str


@dataclass(slots=True, frozen=True)
class ProviderSwitch:
    """The manager moved from one chain entry to the next.

    ``phase`` is ``before_first_token`` (nothing was streamed yet, the caller
    sees a clean answer) or ``mid_stream`` (the next provider continues the
    partial answer; the caller keeps its stream and may say so in metadata).
    ``reason`` is an error class (``429``, ``5xx``, ``timeout``, ``connect-error``,
    ``reset``, ``4xx``, ``circuit-open``, ``rate-limited``, ``credentials``), never upstream text.
    """

    from_id: str
    to_id: str
    phase: SwitchPhase
    reason: str


@dataclass(slots=True, frozen=True)
class Usage:
    """Tokens of the answer, as reported by the provider that finished it."""

    input_tokens: int
    output_tokens: int


@dataclass(slots=True, frozen=True)
class Completed:
    """The answer is complete; always the last event of a successful stream."""

    provider: str
    model: str
    finish_reason: str | None


LLMEvent = TextDelta | ProviderSwitch | Usage | Completed


@dataclass(slots=True)
class Completion:
    """A whole (non-streamed) answer."""

    text: str
    provider: str
    model: str
    finish_reason: str | None
    input_tokens: int = 0
    output_tokens: int = 0
    switches: list[ProviderSwitch] = field(default_factory=list)
