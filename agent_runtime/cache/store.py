"""The response cache of one agent: a backend, the TTL, the scope, and the accounting."""

from __future__ import annotations

import logging
from collections.abc import Callable

from agent_runtime import metrics
from agent_runtime.cache.backend import CacheBackend, CacheBackendError
from agent_runtime.cache.entry import Entry, EntryError
from agent_runtime.cache.memory import MemoryBackend
from agent_runtime.config import CacheRuntimeConfig, duration_seconds
from agent_runtime.redis_connection import RedisConfigError, RedisTarget, resolve_target

log = logging.getLogger("agent_runtime.cache")

# The labelled counters, looked up once (a labels() call per request costs more than the count).
_STORED = metrics.CACHE_STORES.labels(result="stored")
_TOO_LARGE = metrics.CACHE_STORES.labels(result="too_large")


class ResponseCache:
    """Answers by digest, kept ``ttl`` seconds; failures of the backend are misses."""

    def __init__(self, config: CacheRuntimeConfig, backend: CacheBackend) -> None:
        self.config = config
        self.backend = backend
        self.ttl = duration_seconds(config.ttl)
        self.per_principal = config.scope == "principal"
        self.max_entry_bytes = config.max_entry_bytes

    @property
    def target(self) -> RedisTarget | None:
        """The Redis it uses (None for memory): a credentials reload compares it."""
        return getattr(self.backend, "target", None)

    async def lookup(self, digest: str) -> Entry | None:
        """The entry of ``digest``, or None (absent, expired, unreadable, backend down)."""
        try:
            data = await self.backend.get(digest)
        except CacheBackendError as exc:
            metrics.CACHE_BACKEND_ERRORS.labels(op="get").inc()
            log.warning("response cache unavailable: %s", exc)
            return None
        if data is None:
            return None
        try:
            return Entry.decode(data)
        except EntryError:
            return None

    async def store(self, digest: str, entry: Entry) -> None:
        """Keep ``entry``; too large an answer is skipped, a backend failure only counted."""
        data = entry.encode()
        if len(data) > self.max_entry_bytes:
            _TOO_LARGE.inc()
            return
        try:
            await self.backend.set(digest, data, self.ttl)
        except CacheBackendError as exc:
            metrics.CACHE_STORES.labels(result="error").inc()
            metrics.CACHE_BACKEND_ERRORS.labels(op="set").inc()
            log.warning("response cache unavailable: %s", exc)
            return
        _STORED.inc()

    async def aclose(self) -> None:
        """Close the backend."""
        await self.backend.aclose()


def build_cache(
    config: CacheRuntimeConfig | None, read_file: Callable[[str], str | None]
) -> ResponseCache | None:
    """The cache ``config`` asks for (None when off); a Redis backend needs its files."""
    if config is None:
        return None
    if config.backend == "redis":
        assert config.redis is not None  # the config requires it with this backend
        try:
            target = resolve_target(config.redis, read_file)
        except RedisConfigError as exc:
            raise ValueError(f"cache.backend is redis but {exc}") from exc
        # Here, not at the top: redis-py loads only where a Redis backend is configured.
        from agent_runtime.cache.redis import RedisBackend

        return ResponseCache(config, RedisBackend.from_target(target, config.key_prefix))
    return ResponseCache(config, MemoryBackend(config.max_entries, config.max_bytes))
