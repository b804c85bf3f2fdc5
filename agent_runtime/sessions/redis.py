"""Shared session store on Redis: one list per session, trimmed and expired atomically."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from redis.asyncio import RedisCluster

from agent_runtime.redis_connection import ClusterStart, MasterWatch, RedisTarget
from agent_runtime.sessions.base import SessionStoreError, Turn, decode_turns, encode_turn, valid_key


class RedisSessionStore:
    """Shared store: one Redis list per session, trimmed and expired atomically."""

    kind = "redis"

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
        if not valid_key(session_id):
            return []
        try:
            await self._ready()
            raw = await self._redis.lrange(self._key(session_id), 0, -1)
        except Exception as exc:
            raise SessionStoreError(f"session store unavailable: {type(exc).__name__}") from exc
        return decode_turns(raw)

    async def append(self, session_id: str, turns: Sequence[Turn]) -> None:
        """Add turns to ``session_id``."""
        if not valid_key(session_id) or not turns:
            return
        key = self._key(session_id)
        values = [encode_turn(t) for t in turns]
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
