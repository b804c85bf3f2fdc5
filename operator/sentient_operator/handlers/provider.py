"""LLMProvider handlers: the index of the Secrets providers read, and provider events routed to the
provider reconciler (Secret events reach it through :mod:`.referenced`).

The work is :class:`sentient_operator.reconcile.provider.ProviderReconciler`.
"""

from __future__ import annotations

from typing import Any

import kopf

from sentient_operator.api.v1alpha1 import GROUP, VERSION, LLMProviderSpec
from sentient_operator.credentials.sync import referenced_secrets
from sentient_operator.reconcile.context import context_of


@kopf.index(GROUP, VERSION, "llmproviders", id="sentient_provider_secret_refs_idx")
async def sentient_provider_secret_refs_idx(
    namespace: str | None, name: str, spec: kopf.Spec, **_: Any
) -> dict[Any, Any]:
    """(namespace, Secret name) -> provider name, for every Secret a provider reads."""
    if not namespace:
        return {}
    try:
        parsed = LLMProviderSpec.model_validate(dict(spec))
    except ValueError:
        return {}
    return {(namespace, secret): name for secret in referenced_secrets(namespace, parsed)}


@kopf.on.event(GROUP, VERSION, "llmproviders", id="provider-sync")
async def on_provider_event(
    type: str | None, namespace: str | None, name: str, body: kopf.Body, memo: kopf.Memo, **_: Any
) -> None:
    """A provider appeared, changed or went."""
    if namespace:
        context = context_of(memo)
        context.providers.provider_event(type, namespace, name, body)
        if type == "DELETED":
            context.agents.forget_provider(f"{namespace}/{name}")
