"""Secret and ConfigMap events: one handler per kind, for every part of the operator that reads them.

Every Secret and ConfigMap of the served namespaces is watched (a reference names an object, and
no selector can select a set of names), and kopf invokes every handler registered for a kind on
each of its events. One handler per kind keeps an unrelated object's event to one call; it tells
the provider reconciler (the Secrets a provider reads, and the ones it writes) and the agents
(the objects they reference, and their own children).
"""

from __future__ import annotations

from typing import Any

import kopf

from sentient_operator.build.common import AGENT_LABEL, MANAGED_BY
from sentient_operator.handlers.agent import COALESCE
from sentient_operator.reconcile.context import OperatorContext, context_of


def agents_hear(
    context: OperatorContext,
    kind: str,
    type_: str | None,
    namespace: str,
    name: str,
    labels: kopf.Labels,
    body: kopf.Body,
) -> None:
    """Keep the object if something needs it, re-render the agents that use it (a rotated key, a
    systemPromptFrom source), restore an agent's own one edited by hand."""
    store = context.cache.objects(kind)
    if store is not None:
        store.observe(type_, namespace, name, body)
    own_echo = context.children.seen(kind, namespace, name, body, type_)
    context.controller.enqueue_referrers((kind, namespace, name), COALESCE)
    if not own_echo and labels.get("app.kubernetes.io/managed-by") == MANAGED_BY and labels.get(AGENT_LABEL):
        context.controller.enqueue("agent", namespace, labels[AGENT_LABEL], COALESCE)


@kopf.on.event("", "v1", "secrets", id="secret")
async def on_secret_event(
    type: str | None,
    namespace: str | None,
    name: str,
    labels: kopf.Labels,
    body: kopf.Body,
    memo: kopf.Memo,
    sentient_provider_secret_refs_idx: kopf.Index[Any, str] | None = None,
    **_: Any,
) -> None:
    """A Secret changed: the providers that read it or own it, and the agents that use it, hear of it."""
    if not namespace:
        return
    context = context_of(memo)
    refs = sentient_provider_secret_refs_idx
    readers = list(refs.get((namespace, name), [])) if refs is not None else []
    context.providers.secret_event(type, namespace, name, labels, body, readers)
    agents_hear(context, "Secret", type, namespace, name, labels, body)


@kopf.on.event("", "v1", "configmaps", id="configmap")
async def on_config_map_event(
    type: str | None,
    namespace: str | None,
    name: str,
    labels: kopf.Labels,
    body: kopf.Body,
    memo: kopf.Memo,
    **_: Any,
) -> None:
    """A ConfigMap changed: the agents that use it (or own it) hear of it."""
    if namespace:
        agents_hear(context_of(memo), "ConfigMap", type, namespace, name, labels, body)
