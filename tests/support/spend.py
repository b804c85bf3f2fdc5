"""Shared pieces of the spend budget tests: a priced one-entry chain and an API-key caller."""

from __future__ import annotations

from dataclasses import dataclass

from agent_runtime.config import ProviderConfig


@dataclass(frozen=True)
class Caller:
    """What the limiter reads of an authenticated caller (``auth.Principal``)."""

    id: str = "key-1"
    kind: str = "apiKey"
    tier: str | None = None


def priced_chain(
    input_per_million: str, output_per_million: str, currency: str = "USD"
) -> list[ProviderConfig]:
    """A one-entry chain (never called) whose model has these prices per million tokens."""
    return [
        ProviderConfig.model_validate(
            {
                "id": "ns/p",
                "type": "openai",
                "endpoint": "http://127.0.0.1:9/v1",
                "model": "m",
                "price": {
                    "currency": currency,
                    "inputPerMillion": input_per_million,
                    "outputPerMillion": output_per_million,
                },
            }
        )
    ]
