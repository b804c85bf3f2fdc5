"""kopf handlers of the three kinds: indexes, and events routed to the reconcilers, nothing else.

Importing this package registers them all with kopf. The reconcilers are reached through the
:class:`sentient_operator.reconcile.context.OperatorContext` that kopf hands every handler as
its ``memo``.

Every handler and index function is ``async def`` though none awaits anything: kopf runs a plain
``def`` in its thread pool, one hand-off per call (an index and a handler per watch event, tens
of thousands for a fleet of agents), and the work queue and caches they touch belong to the
event loop, whose ``asyncio.Event`` must not be set from another thread.
"""

from __future__ import annotations

from sentient_operator.handlers import agent, lifecycle, policy, provider, referenced

__all__ = ["agent", "lifecycle", "policy", "provider", "referenced"]
