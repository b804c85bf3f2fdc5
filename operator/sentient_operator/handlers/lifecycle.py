"""kopf start-up and clean-up: bind the indexes, start and stop the reconcile workers."""

from __future__ import annotations

from typing import Any

import kopf

from sentient_operator.reconcile.context import context_of


@kopf.on.startup()
async def _startup(memo: kopf.Memo, **kwargs: Any) -> None:
    # kopf passes every index to a startup handler as a keyword argument.
    await context_of(memo).start(kwargs)


@kopf.on.cleanup()
async def _cleanup(memo: kopf.Memo, **_: Any) -> None:
    await context_of(memo).stop()
