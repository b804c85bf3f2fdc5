"""A deduplicating, delayed work queue (the controller-runtime pattern on asyncio).

Watch events only *enqueue* the key of the object to reconcile; workers take
keys when they are due. A key is never worked on twice at once, and a key
added many times before it is taken is reconciled once: a burst of events
(an agent, its Deployment status, its Secret) costs one reconcile.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Hashable
from typing import Generic, TypeVar

K = TypeVar("K", bound=Hashable)


class WorkQueue(Generic[K]):
    """Keys with due times; :meth:`get` waits for the earliest due key not being worked on."""

    def __init__(self) -> None:
        self._due: dict[K, float] = {}
        self._active: set[K] = set()
        self._changed = asyncio.Event()

    def __len__(self) -> int:
        return len(self._due)

    def add(self, key: K, delay: float = 0.0) -> None:
        """Schedule ``key`` in ``delay`` seconds (an earlier schedule of the same key wins)."""
        due = time.monotonic() + max(0.0, delay)
        current = self._due.get(key)
        if current is None or due < current:
            self._due[key] = due
            self._changed.set()

    def pending(self, key: K) -> bool:
        """Whether ``key`` is scheduled."""
        return key in self._due

    async def get(self) -> K:
        """The next due key; the caller must call :meth:`done` with it."""
        while True:
            now = time.monotonic()
            ready = [(due, k) for k, due in self._due.items() if k not in self._active]
            wait: float | None = None
            if ready:
                due, key = min(ready, key=lambda item: item[0])
                if due <= now:
                    del self._due[key]
                    self._active.add(key)
                    return key
                wait = due - now
            self._changed.clear()
            try:
                await asyncio.wait_for(self._changed.wait(), timeout=wait)
            except TimeoutError:
                pass

    def done(self, key: K) -> None:
        """Release ``key``; if it was re-added meanwhile it becomes available again."""
        self._active.discard(key)
        self._changed.set()
