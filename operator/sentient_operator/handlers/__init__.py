"""kopf handlers of the three kinds: indexes, and events routed to the reconcilers, nothing else.

Importing this package registers them all with kopf. The reconcilers are reached through the
:class:`sentient_operator.reconcile.context.OperatorContext` that kopf hands every handler as
its ``memo``.
"""

from __future__ import annotations

from sentient_operator.handlers import agent, lifecycle, policy, provider, referenced

__all__ = ["agent", "lifecycle", "policy", "provider", "referenced"]
