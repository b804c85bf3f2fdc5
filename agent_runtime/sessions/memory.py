"""Process-local session store: an LRU of sessions with expiry, bounded in count."""

from __future__ import annotations

import time
from collections import OrderedDict
from collections.abc import Callable, Sequence

from agent_runtime import metrics
from agent_runtime.sessions.base import Turn, valid_key

# Memory stays bounded under a flood of fresh ids: the least recently used go first.
MAX_MEMORY_SESSIONS = 10_000


class MemorySessionStore:
    """Process-local store: an LRU of sessions with expiry."""

    kind = "memory"

    def __init__(
        self,
        ttl_seconds: float,
        max_turns: int,
        max_sessions: int = MAX_MEMORY_SESSIONS,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.ttl = ttl_seconds
        self.max_turns = max_turns
        self.max_sessions = max_sessions
        self._clock = clock
        self._data: OrderedDict[str, tuple[float, list[Turn]]] = OrderedDict()

    async def get(self, session_id: str) -> list[Turn]:
        """History of ``session_id``."""
        item = self._data.get(session_id)
        if item is None:
            return []
        expires, turns = item
        if expires <= self._clock():
            del self._data[session_id]
            metrics.ACTIVE_SESSIONS.set(len(self._data))
            return []
        return list(turns)

    async def append(self, session_id: str, turns: Sequence[Turn]) -> None:
        """Add turns to ``session_id``."""
        if not valid_key(session_id):
            return
        now = self._clock()
        item = self._data.pop(session_id, None)
        history = item[1] if item is not None and item[0] > now else []
        history.extend(turns)
        if len(history) > self.max_turns:
            del history[: len(history) - self.max_turns]
        self._data[session_id] = (now + self.ttl, history)
        self._evict(now)
        metrics.ACTIVE_SESSIONS.set(len(self._data))

    def _evict(self, now: float) -> None:
        # Least recently used first: the OrderedDict is in last-use order.
        while len(self._data) > self.max_sessions:
            self._data.popitem(last=False)
        while self._data:
            key, (expires, _) = next(iter(self._data.items()))
            if expires > now:
                break
            del self._data[key]

    def __len__(self) -> int:
        return len(self._data)

    async def aclose(self) -> None:
        """Nothing to release."""
