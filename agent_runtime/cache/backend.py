"""What a cache backend offers: get and set of opaque bytes with a TTL."""

from __future__ import annotations

from typing import Protocol


class CacheBackendError(Exception):
    """The backend could not answer (Redis down): the request goes on as a miss."""


class CacheBackend(Protocol):
    """Bytes by key, each with a time to live."""

    async def get(self, key: str) -> bytes | None:
        """The value of ``key``, or None (absent or expired)."""
        ...

    async def set(self, key: str, value: bytes, ttl: float) -> None:
        """Keep ``value`` under ``key`` for ``ttl`` seconds."""
        ...

    async def aclose(self) -> None:
        """Release connections."""
        ...
