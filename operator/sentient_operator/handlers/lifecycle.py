"""kopf log-in, start-up and clean-up: one connection, bind the indexes, start and stop the reconcile workers."""

from __future__ import annotations

from typing import Any

import kopf

from sentient_operator import kube
from sentient_operator.reconcile.context import context_of


@kopf.on.login()
def _login(**_: Any) -> kopf.ConnectionInfo:
    # kopf's watches use the connection the operator's own requests use, whichever client
    # libraries happen to be installed (kopf's default login depends on that).
    return kube.connection_info()


@kopf.on.startup()
async def _startup(memo: kopf.Memo, **kwargs: Any) -> None:
    # kopf passes every index to a startup handler as a keyword argument.
    await context_of(memo).start(kwargs)


@kopf.on.cleanup()
async def _cleanup(memo: kopf.Memo, **_: Any) -> None:
    await context_of(memo).stop()
