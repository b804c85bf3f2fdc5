"""Wire format adapters, one per provider type."""

from __future__ import annotations

from agent_runtime.llm.providers.anthropic import AnthropicAdapter
from agent_runtime.llm.providers.base import Adapter
from agent_runtime.llm.providers.openai import OpenAIAdapter

_ADAPTERS: dict[str, Adapter] = {
    "openai": OpenAIAdapter(),
    "openai-compatible": OpenAIAdapter(),
    "anthropic": AnthropicAdapter(),
}


def adapter_for(provider_type: str) -> Adapter:
    """The adapter of a ``ProviderType`` value."""
    try:
        return _ADAPTERS[str(provider_type)]
    except KeyError:
        raise ValueError(f"unsupported provider type {provider_type!r}") from None


__all__ = ["Adapter", "AnthropicAdapter", "OpenAIAdapter", "adapter_for"]
