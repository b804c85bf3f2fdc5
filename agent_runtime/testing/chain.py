"""Build runtime provider configs that point at fake upstreams (tests, demo, benchmarks)."""

from __future__ import annotations

from typing import Any

from agent_runtime.config import LLMRuntimeConfig, ProviderConfig
from agent_runtime.testing.control import FakeUpstream


def fake_provider(
    fake: FakeUpstream,
    provider_id: str,
    *,
    model: str = "fake-model",
    credential_file: str | None = None,
    **overrides: Any,
) -> ProviderConfig:
    """A chain entry for ``fake``; ``overrides`` are ProviderConfig fields in wire (camelCase) form,
    e.g. ``timeouts={"firstToken": "200ms"}``, ``retry={"maxAttempts": 2}``."""
    data: dict[str, Any] = {
        "id": provider_id,
        "type": fake.kind,
        "endpoint": fake.endpoint,
        "model": model,
        "credentialFile": credential_file,
        **overrides,
    }
    return ProviderConfig.model_validate(data)


def chain_config(*providers: ProviderConfig, **parameters: Any) -> LLMRuntimeConfig:
    """An LLM config with this chain and sampling ``parameters`` (wire form)."""
    return LLMRuntimeConfig.model_validate(
        {"chain": [p.to_wire() for p in providers], "parameters": parameters or {}}
    )
