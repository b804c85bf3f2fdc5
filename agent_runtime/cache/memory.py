"""The in-process backend: an LRU bounded in entries and in bytes, each entry with a deadline.

Per process: with several replicas (or ``server.workers``) each keeps its own entries. Expired
entries are dropped when read and when the bounds make room; the size counted is the stored
value plus the key, which is what the process holds beyond fixed per-entry overhead.
"""

from __future__ import annotations

import time
from collections import OrderedDict
from collections.abc import Callable

from agent_runtime import metrics


class MemoryBackend:
    """An LRU of ``max_entries`` entries and ``max_bytes`` bytes."""

    def __init__(self, max_entries: int, max_bytes: int, clock: Callable[[], float] = time.monotonic) -> None:
        self.max_entries = max_entries
        self.max_bytes = max_bytes
        self._clock = clock
        self._data: OrderedDict[str, tuple[float, bytes]] = OrderedDict()
        self.bytes = 0

    def __len__(self) -> int:
        return len(self._data)

    async def get(self, key: str) -> bytes | None:
        """The value, freshest first in the LRU order; None when absent or expired."""
        item = self._data.get(key)
        if item is None:
            return None
        deadline, value = item
        if deadline <= self._clock():
            self._remove(key)
            self._publish()
            return None
        self._data.move_to_end(key)
        return value

    async def set(self, key: str, value: bytes, ttl: float) -> None:
        """Store ``value``; the least recently used entries go while a bound is exceeded."""
        size = len(key) + len(value)
        if size > self.max_bytes:
            return
        if key in self._data:
            self._remove(key)
        self._data[key] = (self._clock() + ttl, value)
        self.bytes += size
        while len(self._data) > self.max_entries or self.bytes > self.max_bytes:
            oldest = next(iter(self._data))
            self._remove(oldest)
            metrics.CACHE_EVICTIONS.inc()
        self._publish()

    def _remove(self, key: str) -> None:
        _, value = self._data.pop(key)
        self.bytes -= len(key) + len(value)

    def _publish(self) -> None:
        metrics.CACHE_ENTRIES.set(len(self._data))
        metrics.CACHE_BYTES.set(self.bytes)

    async def aclose(self) -> None:
        """Forget every entry (a replaced backend gives its memory back)."""
        self._data.clear()
        self.bytes = 0
        self._publish()
