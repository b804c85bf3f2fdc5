"""LLM access: wire format adapters, retry, circuit breaker, connection pools and the failover manager.

Modules: ``manager`` (the failover loop), ``attempt`` (one upstream call), ``entries`` (the chain
resolved per config), ``errors`` (error classes as types), ``retry`` (backoff), ``breaker``,
``pool`` (connection pools per upstream, TLS, proxies), ``transport`` (HTTP/1.1 keep-alive),
``providers`` (wire formats), ``types`` (requests and events).
"""

from __future__ import annotations

from agent_runtime.llm.errors import LLMError
from agent_runtime.llm.manager import LLMManager, ProviderGate
from agent_runtime.llm.types import (
    ChatMessage,
    ChatRequest,
    Completed,
    Completion,
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
