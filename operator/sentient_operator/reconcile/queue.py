"""A deduplicating, delayed work queue (the controller-runtime pattern on asyncio).

Watch events only *enqueue* the key of the object to reconcile; workers take
keys when they are due. A key is never worked on twice at once, and a key
added many times before it is taken is reconciled once: a burst of events
(an agent, its Deployment status, its Secret) costs one reconcile.
"""

from __future__ import annotations

import asyncio
import heapq
import itertools
import time
from collections.abc import Hashable
from typing import Generic, TypeVar

K = TypeVar("K", bound=Hashable)


class WorkQueue(Generic[K]):
    """Keys with due times; :meth:`get` waits for the earliest due key not being worked on.

    Due keys sit in a heap, so taking one costs O(log n) however many are queued (a fleet being
    created queues a key per agent). A heap entry whose key was rescheduled, taken or is being
    worked on is stale and skipped; a key added while it is worked on goes back on the heap when
    it is done.
    """

    def __init__(self) -> None:
        self._due: dict[K, float] = {}
        self._heap: list[tuple[float, int, K]] = []
        self._order = itertools.count()
        self._active: set[K] = set()
        self._changed = asyncio.Event()

    def __len__(self) -> int:
        return len(self._due)

    def _push(self, key: K, due: float) -> None:
        heapq.heappush(self._heap, (due, next(self._order), key))

    def add(self, key: K, delay: float = 0.0) -> None:
        """Schedule ``key`` in ``delay`` seconds (an earlier schedule of the same key wins)."""
        due = time.monotonic() + max(0.0, delay)
        current = self._due.get(key)
        if current is None or due < current:
            self._due[key] = due
            if key not in self._active:
                self._push(key, due)
            self._changed.set()

    def pending(self, key: K) -> bool:
        """Whether ``key`` is scheduled."""
        return key in self._due

    def _take(self) -> tuple[K | None, float | None]:
        """The due key now (removed from the heap), else ``None`` and how long until the next one."""
        heap = self._heap
        now = time.monotonic()
        while heap:
            due, _, key = heap[0]
            if self._due.get(key) != due or key in self._active:
                heapq.heappop(heap)  # stale: rescheduled, already taken, or pushed again on done()
                continue
            if due > now:
                return None, due - now
            heapq.heappop(heap)
            del self._due[key]
            self._active.add(key)
            return key, None
        return None, None

    async def get(self) -> K:
        """The next due key; the caller must call :meth:`done` with it."""
        while True:
            key, wait = self._take()
            if key is not None:
                return key
            self._changed.clear()
            try:
                await asyncio.wait_for(self._changed.wait(), timeout=wait)
            except TimeoutError:
                pass

    def done(self, key: K) -> None:
        """Release ``key``; if it was re-added meanwhile it becomes available again."""
        self._active.discard(key)
        due = self._due.get(key)
        if due is not None:
            self._push(key, due)
        self._changed.set()
