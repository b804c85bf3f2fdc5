"""The work queue, its workers, the reconcilers registered per kind, and who references what.

The handlers are level-triggered: kopf watch events (on agents, on anything an
agent references, on the agents' children) only enqueue keys; workers
reconcile the current state read from kopf's indexes. An idle cluster
produces no events, hence no reconciles, hence no writes; a periodic resync
re-checks everything from memory and writes only what differs.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections import defaultdict
from collections.abc import Awaitable, Callable
from typing import Any

from sentient_operator import metrics
from sentient_operator.reconcile.cache import ClusterCache
from sentient_operator.reconcile.queue import WorkQueue
from sentient_operator.settings import Settings

log = logging.getLogger("sentient_operator.reconcile")

#: ("agent" | "policy", namespace, name)
WorkKey = tuple[str, str, str]
#: ("LLMProvider" | "RateLimitPolicy" | "Secret" | "ConfigMap", namespace, name)
RefKey = tuple[str, str, str]

Reconciler = Callable[[str, str], Awaitable[float | None]]


class Controller:
    """The queue, the reconcilers registered per kind, and who references what."""

    def __init__(self, settings: Settings, cache: ClusterCache) -> None:
        self.settings = settings
        self.cache = cache
        self.queue: WorkQueue[WorkKey] = WorkQueue()
        self.reconcilers: dict[str, Reconciler] = {}
        #: Work-queue kind -> the Kind its metrics are labelled with (``provider`` -> ``LLMProvider``).
        self.resource_kinds: dict[str, str] = {}
        self.refs_of: dict[WorkKey, set[RefKey]] = {}
        self.referrers: dict[RefKey, set[WorkKey]] = defaultdict(set)
        self.failures: dict[WorkKey, int] = {}
        #: Reconciles finished so far (any outcome).
        self.completed = 0
        self.tasks: list[asyncio.Task[None]] = []
        self._periodic: list[tuple[str, float, Callable[[], Awaitable[Any]]]] = []

    def register(self, kind: str, reconciler: Reconciler, resource_kind: str) -> None:
        """Route keys of ``kind`` to ``reconciler(namespace, name) -> requeue delay or None``;
        ``resource_kind`` (``SentientAgent``...) labels its metrics."""
        self.reconcilers[kind] = reconciler
        self.resource_kinds[kind] = resource_kind

    def enqueue(self, kind: str, namespace: str, name: str, delay: float = 0.0) -> None:
        """Schedule a reconcile of one object."""
        self.queue.add((kind, namespace, name), delay)
        metrics.QUEUE_DEPTH.set(len(self.queue))

    def referenced(self, kind: str, namespace: str, name: str) -> bool:
        """Whether any agent or policy referenced ``(kind, namespace, name)`` at its last reconcile."""
        return (kind, namespace, name) in self.referrers

    def enqueue_referrers(self, ref: RefKey, delay: float = 0.0) -> None:
        """Schedule every object that referenced ``ref`` at its last reconcile."""
        for kind, namespace, name in list(self.referrers.get(ref, ())):
            self.enqueue(kind, namespace, name, delay)

    def set_refs(self, key: WorkKey, refs: set[RefKey]) -> None:
        """Record what ``key`` references, so that a change of any of them re-reconciles it."""
        for old in self.refs_of.get(key, set()) - refs:
            self.referrers[old].discard(key)
            if not self.referrers[old]:
                del self.referrers[old]
                self.cache.release(*old)
        for new in refs:
            self.referrers[new].add(key)
        if refs:
            self.refs_of[key] = refs
        else:
            self.refs_of.pop(key, None)

    def forget(self, key: WorkKey) -> None:
        """Drop everything known about a deleted object."""
        self.set_refs(key, set())
        self.failures.pop(key, None)

    def backoff(self, key: WorkKey) -> float:
        """Next retry delay of a failing key: exponential from the initial backoff to the maximum."""
        settings = self.settings
        attempts = self.failures.get(key, 0)
        self.failures[key] = attempts + 1
        delay: float = min(settings.backoff_max, settings.backoff_initial * (2**attempts))
        return delay

    async def _work(self) -> None:
        while True:
            key = await self.queue.get()
            metrics.QUEUE_DEPTH.set(len(self.queue))
            kind, namespace, name = key
            try:
                reconciler = self.reconcilers.get(kind)
                if reconciler is None:
                    continue
                requeue = await reconciler(namespace, name)
                if requeue is None:
                    self.failures.pop(key, None)
                else:
                    self.queue.add(key, requeue)
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                # A bug must not kill the worker; the key is retried with backoff.
                delay = self.backoff(key)
                metrics.RECONCILE_ERRORS.labels(self.resource_kinds.get(kind, kind), type(exc).__name__).inc()
                log.exception("reconcile of %s %s/%s failed; retrying in %.0fs", kind, namespace, name, delay)
                self.queue.add(key, delay)
            finally:
                self.completed += 1
                self.queue.done(key)

    async def _resync(self, interval: float) -> None:
        while True:
            await asyncio.sleep(interval)
            for namespace, name in self.cache.agent_keys():
                self.enqueue("agent", namespace, name)
            if self.cache.policies is not None:
                for namespace, name in list(self.cache.policies):
                    self.enqueue("policy", namespace, name)

    def every(self, name: str, interval: float, job: Callable[[], Awaitable[Any]]) -> None:
        """Run ``job`` every ``interval`` seconds once started (never when ``interval`` <= 0)."""
        if interval > 0:
            self._periodic.append((name, interval, job))

    async def _repeat(self, name: str, interval: float, job: Callable[[], Awaitable[Any]]) -> None:
        while True:
            await asyncio.sleep(interval)
            try:
                await job()
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                # The next round retries; a periodic job must never die of one failure.
                log.warning("%s failed: %s", name, exc)

    def start(self) -> None:
        """Start the workers and the periodic resync on the running loop."""
        settings = self.settings
        self.tasks = [
            asyncio.create_task(self._work(), name=f"reconcile-{i}") for i in range(settings.workers)
        ]
        self.tasks.append(asyncio.create_task(self._resync(settings.resync_seconds), name="resync"))
        for name, interval, job in self._periodic:
            self.tasks.append(asyncio.create_task(self._repeat(name, interval, job), name=name))

    async def stop(self) -> None:
        """Cancel the workers (in-flight reconciles are level-triggered and safe to cut)."""
        for task in self.tasks:
            task.cancel()
        for task in self.tasks:
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await task
        self.tasks = []
