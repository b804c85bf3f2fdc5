"""The operator's parts, built once from its settings and handed to kopf as its ``memo``.

:func:`sentient_operator.main.run` builds one :class:`OperatorContext` and passes it to
``kopf.operator(memo=...)``; kopf gives every handler that ``memo``, so the handlers reach the
reconcilers through it (:func:`context_of`) and no part of the operator keeps a module-level
copy of the settings, the cache or the queue.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Mapping
from typing import Any

from sentient_operator.credentials.fingerprint import load_or_create_key
from sentient_operator.heap import HeapTrimmer
from sentient_operator.leader import missing_namespace
from sentient_operator.reconcile.agent import AgentReconciler
from sentient_operator.reconcile.agent_status import KIND as AGENT_KIND
from sentient_operator.reconcile.cache import ClusterCache
from sentient_operator.reconcile.children import ChildApplier
from sentient_operator.reconcile.controller import Controller
from sentient_operator.reconcile.drift import DriftCheck
from sentient_operator.reconcile.policy import KIND as POLICY_KIND
from sentient_operator.reconcile.policy import PolicyReconciler
from sentient_operator.reconcile.provider import KIND as PROVIDER_KIND
from sentient_operator.reconcile.provider import RESOURCE_KIND as PROVIDER_RESOURCE_KIND
from sentient_operator.reconcile.provider import ProviderReconciler
from sentient_operator.settings import Settings

log = logging.getLogger("sentient_operator.reconcile")

#: How often due credential checks are looked for (a changed key is checked within this).
CREDENTIAL_CHECK_TICK = 1.0
# How often the heap is trimmed while reconciles happen (never while idle). A trim takes about
# 7 ms at 150 MB of heap; every 20 s left a rollout of 1000 agents holding some 10 MB more
# than once it had settled.
HEAP_TRIM_SECONDS = 5.0
#: The key of the context in kopf's memo.
MEMO_KEY = "sentient"


class FingerprintKey:
    """The operator's HMAC key for credential fingerprints: loaded (or created) once, on demand."""

    def __init__(self, namespace: str) -> None:
        self.namespace = namespace
        self._key: bytes | None = None
        self._lock = asyncio.Lock()

    @property
    def current(self) -> bytes | None:
        """The key if it was loaded already (never waits)."""
        return self._key

    async def get(self) -> bytes:
        """The key, read from (or written to) its Secret in the operator's namespace on first use."""
        async with self._lock:
            if self._key is None:
                self._key = await load_or_create_key(self.namespace)
            return self._key


class OperatorContext:
    """Settings, cache, queue and the three reconcilers of one operator process."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        # The cache keeps the Secrets and ConfigMaps that the controller knows to be referenced.
        self.cache = ClusterCache(lambda kind, ns, name: self.controller.referenced(kind, ns, name))
        self.controller = Controller(settings, self.cache)
        self.children = ChildApplier(self.cache)
        self.fingerprint_key = FingerprintKey(settings.operator_namespace)
        self.agents = AgentReconciler(
            settings, self.cache, self.controller, self.children, lambda: self.fingerprint_key.current
        )
        self.providers = ProviderReconciler(settings, self.controller, self.fingerprint_key.get)
        self.policies = PolicyReconciler(self.cache, self.controller)
        self.controller.register("agent", self.agents.reconcile, AGENT_KIND)
        self.controller.register("policy", self.policies.reconcile, POLICY_KIND)
        self.controller.register(PROVIDER_KIND, self.providers.reconcile, PROVIDER_RESOURCE_KIND)
        self.drift = DriftCheck(self.cache, self.children, self.controller)
        self.controller.every("drift-check", settings.drift_check_seconds, self.drift.run_once)
        # In-memory bookkeeping each tick; an upstream is called only when its check is due.
        self.controller.every("credential-check", CREDENTIAL_CHECK_TICK, self.providers.run_checks)
        self.heap = HeapTrimmer(lambda: self.controller.completed)
        self.controller.every("heap-trim", HEAP_TRIM_SECONDS, self.heap.run_once)
        #: Set once kopf's startup handlers ran (kopf has installed its signal handlers by then).
        self.started = asyncio.Event()

    async def start(self, indexes: Mapping[str, Any]) -> None:
        """Bind kopf's indexes, load the fingerprint key, start the workers (kopf's startup)."""
        self.cache.bind(**indexes)
        try:
            await self.fingerprint_key.get()
        except Exception as exc:
            # Without the key, RollingRestart agents roll on config changes only; rotation is retried.
            namespace = self.settings.operator_namespace
            if getattr(exc, "status", None) == 404:
                log.warning("%s", missing_namespace(namespace, "the credential fingerprint key"))
            else:
                log.warning("fingerprint key unavailable in namespace %s: %s", namespace, type(exc).__name__)
        self.controller.start()
        self.started.set()

    async def stop(self) -> None:
        """Stop the workers (kopf's cleanup)."""
        await self.controller.stop()


def context_of(memo: Any) -> OperatorContext:
    """The context kopf hands every handler in its ``memo``."""
    context = memo.get(MEMO_KEY) if isinstance(memo, Mapping) else getattr(memo, MEMO_KEY, None)
    if not isinstance(context, OperatorContext):
        raise RuntimeError("kopf was started without the operator context (see sentient_operator.main)")
    return context
