"""Conversation history per session id, in memory or in Redis, with a TTL and bounded length.

A session id is the ``activity_id`` of a Sentient request. History holds at most
``max_turns`` messages (oldest dropped) and expires ``ttl`` after its last use.
The memory store also caps the number of sessions so memory stays bounded
under a flood of fresh ids.

A session belongs to the principal that created it: requests reach the store
through :class:`OwnedSessions`, which keys every session by its owner (API key
id or JWT subject) as well as by its id. Another principal naming the same
activity id gets a fresh, separate session of its own, never the owner's
history. (Anonymous callers all share the one anonymous principal: with
anonymous access on, nothing tells two of them apart.)
"""

from __future__ import annotations

import hashlib
import json
import logging
import time
from collections import OrderedDict
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, Protocol

from redis.asyncio import RedisCluster

from agent_runtime import metrics
from agent_runtime.config import SessionsRuntimeConfig, parse_duration
from agent_runtime.redis_connection import (
    ClusterStart,
    MasterWatch,
    RedisConfigError,
    RedisTarget,
    resolve_target,
)

log = logging.getLogger("agent_runtime.sessions")

MAX_MEMORY_SESSIONS = 10_000
MAX_SESSION_ID_LENGTH = 256
# A stored key is the owner's digest (32 hex), a colon and the caller's session id.
MAX_SESSION_KEY_LENGTH = MAX_SESSION_ID_LENGTH + 33


@dataclass(frozen=True, slots=True)
class Turn:
    """One message of the conversation history."""

    role: str
    content: str


class SessionStore(Protocol):
    """Where conversation history lives."""

    max_turns: int

    async def get(self, session_id: str) -> list[Turn]:
        """History of ``session_id``, oldest first (empty when unknown or expired)."""
        ...

    async def append(self, session_id: str, turns: Sequence[Turn]) -> None:
        """Add turns, drop the oldest beyond ``max_turns``, refresh the TTL."""
        ...

    async def aclose(self) -> None:
        """Release connections."""
        ...


class SessionStoreError(Exception):
    """The backing store failed."""


def _valid_id(session_id: str) -> bool:
    return 0 < len(session_id) <= MAX_SESSION_KEY_LENGTH


def owner_digest(kind: str, principal_id: str) -> str:
    """A short fixed-length name of a session owner (a hash: JWT subjects can be long)."""
    return hashlib.sha256(f"{kind}\0{principal_id}".encode()).hexdigest()[:32]


class OwnedSessions:
    """The sessions of one principal: a view of a store with every id prefixed by its owner."""

    __slots__ = ("_prefix", "max_turns", "store")

    def __init__(self, store: SessionStore, kind: str, principal_id: str) -> None:
        self.store = store
        self.max_turns = store.max_turns
        self._prefix = owner_digest(kind, principal_id) + ":"

    async def get(self, session_id: str) -> list[Turn]:
        """History of the owner's ``session_id``."""
        if not 0 < len(session_id) <= MAX_SESSION_ID_LENGTH:
            return []
        return await self.store.get(self._prefix + session_id)

    async def append(self, session_id: str, turns: Sequence[Turn]) -> None:
        """Add turns to the owner's ``session_id``."""
        if 0 < len(session_id) <= MAX_SESSION_ID_LENGTH:
            await self.store.append(self._prefix + session_id, turns)

    async def aclose(self) -> None:
        """Nothing to release: the store belongs to the runtime."""


class MemorySessionStore:
    """Process-local store: an LRU of sessions with expiry."""

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
        if not _valid_id(session_id):
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


class RedisSessionStore:
    """Shared store: one Redis list per session, trimmed and expired atomically."""

    def __init__(
        self,
        client: Any,
        ttl_seconds: float,
        max_turns: int,
        prefix: str,
        url: str | None = None,
        target: RedisTarget | None = None,
    ) -> None:
        self._redis = client
        self.url = url
        self.target = target if target is not None else (RedisTarget.standalone(url) if url else None)
        self._cluster_start = ClusterStart() if isinstance(client, RedisCluster) else None
        self._master_watch = MasterWatch(getattr(client, "connection_pool", None))
        self.ttl = max(1, int(ttl_seconds))
        self.max_turns = max_turns
        self.prefix = prefix

    async def _ready(self) -> None:
        self._master_watch.start()
        if self._cluster_start is not None:
            await self._cluster_start.ready(self._redis)

    @classmethod
    def from_url(cls, url: str, ttl_seconds: float, max_turns: int, prefix: str) -> RedisSessionStore:
        """A store on a Redis URL (``redis://`` or ``rediss://``)."""
        import redis.asyncio as aioredis

        client = aioredis.from_url(url, socket_timeout=2.0, socket_connect_timeout=2.0)
        return cls(client, ttl_seconds, max_turns, prefix, url=url)

    @classmethod
    def from_target(
        cls, target: RedisTarget, ttl_seconds: float, max_turns: int, prefix: str
    ) -> RedisSessionStore:
        """A store on a Redis in any mode (standalone, Sentinel, Cluster).

        One session is one key, so on a Cluster each read and each append (a MULTI on that
        key) stays on the key's own slot.
        """
        return cls(target.client(), ttl_seconds, max_turns, prefix, url=target.url, target=target)

    def _key(self, session_id: str) -> str:
        return f"{self.prefix}{session_id}"

    async def get(self, session_id: str) -> list[Turn]:
        """History of ``session_id``."""
        if not _valid_id(session_id):
            return []
        try:
            await self._ready()
            raw = await self._redis.lrange(self._key(session_id), 0, -1)
        except Exception as exc:
            raise SessionStoreError(f"session store unavailable: {type(exc).__name__}") from exc
        turns = []
        for item in raw:
            try:
                data = json.loads(item)
                turns.append(Turn(str(data["role"]), str(data["content"])))
            except (ValueError, KeyError, TypeError):
                continue
        return turns

    async def append(self, session_id: str, turns: Sequence[Turn]) -> None:
        """Add turns to ``session_id``."""
        if not _valid_id(session_id) or not turns:
            return
        key = self._key(session_id)
        values = [json.dumps({"role": t.role, "content": t.content}) for t in turns]
        try:
            await self._ready()
            async with self._redis.pipeline(transaction=True) as pipe:
                pipe.rpush(key, *values)
                pipe.ltrim(key, -self.max_turns, -1)
                pipe.expire(key, self.ttl)
                await pipe.execute()
        except Exception as exc:
            raise SessionStoreError(f"session store unavailable: {type(exc).__name__}") from exc

    async def aclose(self) -> None:
        """Close the connection pool."""
        self._master_watch.stop()
        await self._redis.aclose()


def build_session_store(
    config: SessionsRuntimeConfig, read_file: Callable[[str], str | None], agent: str
) -> SessionStore:
    """The store the config asks for; Redis needs its URL file to exist."""
    ttl = parse_duration(config.ttl).total_seconds()
    if config.store == "redis":
        connection = config.connection()
        if connection is None:
            raise ValueError("sessions.store is redis but no Redis connection is configured")
        try:
            target = resolve_target(connection, read_file)
        except RedisConfigError as exc:
            raise ValueError(f"sessions.store is redis but {exc}") from exc
        return RedisSessionStore.from_target(
            target, ttl, config.max_turns, prefix=f"sentient:session:{agent}:"
        )
    return MemorySessionStore(ttl, config.max_turns)


def turns_to_wire(turns: Sequence[Turn]) -> list[dict[str, str]]:
    """History as plain dicts (for /health and tests)."""
    return [{"role": t.role, "content": t.content} for t in turns]
