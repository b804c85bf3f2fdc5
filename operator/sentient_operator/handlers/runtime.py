"""Shared state of the reconcilers: the work queue, its workers, reverse references, kopf settings.

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

import kopf

from sentient_operator import metrics
from sentient_operator.handlers.cache import cache
from sentient_operator.handlers.queue import WorkQueue
from sentient_operator.settings import get_settings

log = logging.getLogger("sentient_operator.handlers")

#: ("agent" | "policy", namespace, name)
WorkKey = tuple[str, str, str]
#: ("LLMProvider" | "RateLimitPolicy" | "Secret" | "ConfigMap", namespace, name)
RefKey = tuple[str, str, str]

Reconciler = Callable[[str, str], Awaitable[float | None]]


class Controller:
    """The queue, the reconcilers registered per kind, and who references what."""

    def __init__(self) -> None:
        self.queue: WorkQueue[WorkKey] = WorkQueue()
        self.reconcilers: dict[str, Reconciler] = {}
        self.refs_of: dict[WorkKey, set[RefKey]] = {}
        self.referrers: dict[RefKey, set[WorkKey]] = defaultdict(set)
        self.failures: dict[WorkKey, int] = {}
        self.tasks: list[asyncio.Task[None]] = []
        self.fingerprint_key: bytes | None = None

    def register(self, kind: str, reconciler: Reconciler) -> None:
        """Route keys of ``kind`` to ``reconciler(namespace, name) -> requeue delay or None``."""
        self.reconcilers[kind] = reconciler

    def enqueue(self, kind: str, namespace: str, name: str, delay: float = 0.0) -> None:
        """Schedule a reconcile of one object."""
        self.queue.add((kind, namespace, name), delay)
        metrics.QUEUE_DEPTH.set(len(self.queue))

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
        settings = get_settings()
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
                metrics.RECONCILE_ERRORS.labels(kind, type(exc).__name__).inc()
                log.exception("reconcile of %s %s/%s failed; retrying in %.0fs", kind, namespace, name, delay)
                self.queue.add(key, delay)
            finally:
                self.queue.done(key)

    async def _resync(self, interval: float) -> None:
        while True:
            await asyncio.sleep(interval)
            for namespace, name in cache.agent_keys():
                self.enqueue("agent", namespace, name)
            if cache.policies is not None:
                for namespace, name in list(cache.policies):
                    self.enqueue("policy", namespace, name)

    def start(self) -> None:
        """Start the workers and the periodic resync on the running loop."""
        settings = get_settings()
        self.tasks = [
            asyncio.create_task(self._work(), name=f"reconcile-{i}") for i in range(settings.workers)
        ]
        self.tasks.append(asyncio.create_task(self._resync(settings.resync_seconds), name="resync"))

    async def stop(self) -> None:
        """Cancel the workers (in-flight reconciles are level-triggered and safe to cut)."""
        for task in self.tasks:
            task.cancel()
        for task in self.tasks:
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await task
        self.tasks = []


controller = Controller()


def configure_kopf(settings: kopf.OperatorSettings) -> None:
    """kopf settings: timeouts so silent watches reconnect, short backoffs, no annotations, no peering."""
    ours = get_settings()
    settings.watching.server_timeout = int(ours.watch_server_timeout)  # the apiserver wants an integer
    settings.watching.client_timeout = ours.watch_client_timeout
    settings.watching.inactivity_timeout = ours.watch_inactivity_timeout
    settings.watching.connect_timeout = 30
    settings.queueing.error_delays = [1, 2, 5, 10, 20, 30, 60]
    # Progress (if any handler ever keeps some) lives in status, not in size-limited annotations.
    settings.persistence.progress_storage = kopf.StatusProgressStorage()
    # One active replica is chosen by our Lease (see sentient_operator.leader), not by kopf peering.
    settings.peering.standalone = True
    settings.posting.level = logging.WARNING
    settings.posting.reporting_component = "sentient-operator"
    settings.posting.reporting_instance = ours.identity


@kopf.on.startup()
async def _startup(settings: kopf.OperatorSettings, logger: kopf.Logger, **kwargs: Any) -> None:
    configure_kopf(settings)
    cache.bind(**kwargs)
    await _load_fingerprint_key(logger)
    controller.start()


@kopf.on.cleanup()
async def _cleanup(**_: Any) -> None:
    await controller.stop()


async def _load_fingerprint_key(logger: kopf.Logger) -> None:
    from kubernetes.client import CoreV1Api

    from sentient_operator import kube
    from sentient_operator.credentials.fingerprint import load_or_create_key

    namespace = get_settings().operator_namespace
    try:
        controller.fingerprint_key = await asyncio.to_thread(
            load_or_create_key, CoreV1Api(kube.load_client()), namespace
        )
    except Exception as exc:
        # Without the key, RollingRestart agents roll on config changes only; rotation is retried.
        logger.warning("fingerprint key unavailable in namespace %s: %s", namespace, type(exc).__name__)
