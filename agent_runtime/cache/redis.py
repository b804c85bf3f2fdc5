"""The shared backend: one Redis string per answer, written with ``SET ... PX`` (its TTL).

Every command touches one key, so Redis Cluster needs nothing more than the key's own slot
(the digest is the hash tag: ``<prefix>{<digest>}``, the scheme of ``redis_connection``), and
behind Sentinel the pool follows the master across a failover (:class:`MasterWatch`). The total
size is Redis's to bound: give it ``maxmemory`` and an eviction policy (``allkeys-lru``, or
``volatile-lru`` when it holds other data); each entry still carries its TTL and the runtime
never writes one larger than ``maxEntryBytes``. An unreachable Redis is a miss, never an error
of the request.
"""

from __future__ import annotations

from typing import Any

from redis.asyncio import RedisCluster

from agent_runtime.cache.backend import CacheBackendError
from agent_runtime.redis_connection import ClusterStart, MasterWatch, RedisTarget


class RedisBackend:
    """Entries in Redis (standalone, Cluster or Sentinel)."""

    def __init__(self, client: Any, prefix: str, target: RedisTarget | None = None) -> None:
        self._redis = client
        self.prefix = prefix
        # Compared on a credentials reload: a changed URL or password needs a new client.
        self.target = target
        self._cluster_start = ClusterStart() if isinstance(client, RedisCluster) else None
        self._master_watch = MasterWatch(getattr(client, "connection_pool", None))

    @classmethod
    def from_target(cls, target: RedisTarget, prefix: str) -> RedisBackend:
        """A backend on a Redis in any mode; short timeouts, as a cache must not hold a request."""
        client = target.client(socket_timeout=0.5, connect_timeout=0.5)
        return cls(client, prefix, target)

    def key(self, digest: str) -> str:
        """The Redis key of a digest; the digest is its Cluster hash tag."""
        return f"{self.prefix}{{{digest}}}"

    async def _ready(self) -> None:
        self._master_watch.start()
        if self._cluster_start is not None:
            await self._cluster_start.ready(self._redis)

    async def get(self, key: str) -> bytes | None:
        """The value, or None; :class:`CacheBackendError` when Redis cannot answer."""
        try:
            await self._ready()
            value = await self._redis.get(self.key(key))
        except Exception as exc:
            raise CacheBackendError(type(exc).__name__) from exc
        return value if isinstance(value, bytes) else None

    async def set(self, key: str, value: bytes, ttl: float) -> None:
        """Store with a TTL in milliseconds (at least 1)."""
        try:
            await self._ready()
            await self._redis.set(self.key(key), value, px=max(1, int(ttl * 1000)))
        except Exception as exc:
            raise CacheBackendError(type(exc).__name__) from exc

    async def aclose(self) -> None:
        """Close the connection pool."""
        self._master_watch.stop()
        await self._redis.aclose()
