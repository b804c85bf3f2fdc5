"""Every operator metric's ``kind`` label is a Kind (``LLMProvider``), never a work-queue name."""

from __future__ import annotations

import asyncio

from prometheus_client import REGISTRY

from sentient_operator.reconcile.context import OperatorContext
from sentient_operator.settings import Settings

KINDS = {"SentientAgent", "LLMProvider", "RateLimitPolicy"}


def _kind_labels() -> set[str]:
    kinds = set()
    for family in REGISTRY.collect():
        if not family.name.startswith("sentient_operator_reconcile"):
            continue
        for sample in family.samples:
            if "kind" in sample.labels:
                kinds.add(sample.labels["kind"])
    return kinds


async def test_reconcile_metrics_are_labelled_with_kinds() -> None:
    context = OperatorContext(Settings(workers=1))
    assert set(context.controller.resource_kinds.values()) == KINDS

    async def broken(namespace: str, name: str) -> float | None:
        raise RuntimeError("a bug")

    # A provider key reconciled (nothing remembered: gone), and a failing one of each queue kind.
    await context.providers.reconcile("team", "gone")
    for kind in list(context.controller.reconcilers):
        context.controller.reconcilers[kind] = broken
        context.controller.enqueue(kind, "team", "x")
    context.controller.start()
    try:
        for _ in range(100):
            if not len(context.controller.queue) and _kind_labels() >= KINDS:
                break
            await asyncio.sleep(0.02)
    finally:
        await context.controller.stop()
    assert _kind_labels() >= KINDS
    assert not {"provider", "agent", "policy"} & _kind_labels()
