"""Process-local session store: an LRU of sessions with expiry, bounded in count and in size."""

from __future__ import annotations

import time
from collections import OrderedDict
from collections.abc import Callable, Sequence
from dataclasses import dataclass

from agent_runtime import metrics
from agent_runtime.sessions.base import Turn, valid_key

# Memory stays bounded under a flood of fresh ids: the least recently used go first.
MAX_MEMORY_SESSIONS = 10_000
# ... and under a flood of large prompts: 10,000 sessions of 50 turns of 1 MB each would be
# 500 GB. Characters of every kept turn together, at most; least recently used sessions go
# first, and a single session larger than this keeps only its newest turns that fit.
MAX_MEMORY_CHARS = 64 * 1024 * 1024


@dataclass(slots=True)
class _Session:
    expires: float
    turns: list[Turn]
    chars: int


def _chars(turns: Sequence[Turn]) -> int:
    return sum(len(t.content) for t in turns)


class MemorySessionStore:
    """Process-local store: an LRU of sessions with expiry."""

    kind = "memory"

    def __init__(
        self,
        ttl_seconds: float,
        max_turns: int,
        max_sessions: int = MAX_MEMORY_SESSIONS,
        clock: Callable[[], float] = time.monotonic,
        max_chars: int = MAX_MEMORY_CHARS,
    ) -> None:
        self.ttl = ttl_seconds
        self.max_turns = max_turns
        self.max_sessions = max_sessions
        self.max_chars = max_chars
        self._clock = clock
        self._data: OrderedDict[str, _Session] = OrderedDict()
        self._total_chars = 0

    async def get(self, session_id: str) -> list[Turn]:
        """History of ``session_id``."""
        session = self._data.get(session_id)
        if session is None:
            return []
        if session.expires <= self._clock():
            self._drop(session_id)
            metrics.ACTIVE_SESSIONS.set(len(self._data))
            return []
        return list(session.turns)

    async def append(self, session_id: str, turns: Sequence[Turn]) -> None:
        """Add turns to ``session_id``."""
        if not valid_key(session_id):
            return
        now = self._clock()
        session = self._data.get(session_id)
        if session is not None:
            self._drop(session_id)
        history = session.turns if session is not None and session.expires > now else []
        history.extend(turns)
        if len(history) > self.max_turns:
            del history[: len(history) - self.max_turns]
        chars = _chars(history)
        while chars > self.max_chars and history:
            chars -= len(history.pop(0).content)
        self._data[session_id] = _Session(now + self.ttl, history, chars)
        self._total_chars += chars
        self._evict(now)
        metrics.ACTIVE_SESSIONS.set(len(self._data))

    def _drop(self, session_id: str) -> None:
        self._total_chars -= self._data.pop(session_id).chars

    def _evict(self, now: float) -> None:
        # Least recently used first: the OrderedDict is in last-use order.
        while len(self._data) > self.max_sessions or self._total_chars > self.max_chars:
            self._drop(next(iter(self._data)))
        while self._data:
            key, session = next(iter(self._data.items()))
            if session.expires > now:
                break
            self._drop(key)

    def __len__(self) -> int:
        return len(self._data)

    @property
    def chars(self) -> int:
        """Characters of every kept turn together."""
        return self._total_chars

    async def aclose(self) -> None:
        """Nothing to release."""
