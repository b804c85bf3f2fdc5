"""LLM access: wire format adapters, retry, circuit breaker and the failover manager."""

from __future__ import annotations

from agent_runtime.llm.manager import LLMManager, ProviderGate
from agent_runtime.llm.types import (
    ChatMessage,
    ChatRequest,
    Completed,
    Completion,
    LLMError,
    LLMEvent,
    ProviderSwitch,
    TextDelta,
    Usage,
)

__all__ = [
    "ChatMessage",
    "ChatRequest",
    "Completed",
    "Completion",
    "LLMError",
    "LLMEvent",
    "LLMManager",
    "ProviderGate",
    "ProviderSwitch",
    "TextDelta",
    "Usage",
]
