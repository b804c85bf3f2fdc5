"""Conversation history per session id: in memory, in Redis or in PostgreSQL.

A session id is the ``activity_id`` of a Sentient request. Every store keeps at most
``max_turns`` messages per session (oldest dropped), expires a session ``ttl`` after its last
append and raises :class:`SessionStoreError` when its backend fails (the caller answers without
history). The interface and the owner-scoped view are in :mod:`.base`; one module per store.
"""

from __future__ import annotations

import importlib.util
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from agent_runtime.config import SessionsRuntimeConfig, parse_duration
from agent_runtime.redis_connection import RedisConfigError, resolve_target
from agent_runtime.sessions.base import (
    MAX_SESSION_ID_LENGTH,
    MAX_SESSION_KEY_LENGTH,
    OwnedSessions,
    SessionStore,
    SessionStoreError,
    Turn,
    owner_digest,
    turns_to_wire,
    valid_key,
)
from agent_runtime.sessions.memory import MAX_MEMORY_SESSIONS, MemorySessionStore

if TYPE_CHECKING:
    from agent_runtime.sessions.redis import RedisSessionStore

__all__ = [
    "MAX_MEMORY_SESSIONS",
    "MAX_SESSION_ID_LENGTH",
    "MAX_SESSION_KEY_LENGTH",
    "MemorySessionStore",
    "OwnedSessions",
    "RedisSessionStore",
    "SessionStore",
    "SessionStoreError",
    "Turn",
    "build_session_store",
    "owner_digest",
    "start_sessions",
    "turns_to_wire",
    "valid_key",
]


def __getattr__(name: str) -> Any:
    # RedisSessionStore is exported, but loaded (with redis-py) on first use only.
    if name == "RedisSessionStore":
        from agent_runtime.sessions.redis import RedisSessionStore

        return RedisSessionStore
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def build_session_store(
    config: SessionsRuntimeConfig, read_file: Callable[[str], str | None], agent: str
) -> SessionStore:
    """The store the config asks for; Redis needs its URL file, PostgreSQL its DSN file."""
    ttl = parse_duration(config.ttl).total_seconds()
    if config.store == "redis":
        connection = config.connection()
        if connection is None:
            raise ValueError("sessions.store is redis but no Redis connection is configured")
        try:
            target = resolve_target(connection, read_file)
        except RedisConfigError as exc:
            raise ValueError(f"sessions.store is redis but {exc}") from exc
        # Here, not at the top: redis-py loads only where a Redis store is configured.
        from agent_runtime.sessions.redis import RedisSessionStore

        return RedisSessionStore.from_target(
            target, ttl, config.max_turns, prefix=f"sentient:session:{agent}:"
        )
    if config.store == "postgres":
        return _postgres_store(config, read_file, agent, ttl)
    return MemorySessionStore(ttl, config.max_turns)


def _postgres_store(
    config: SessionsRuntimeConfig, read_file: Callable[[str], str | None], agent: str, ttl: float
) -> SessionStore:
    settings = config.postgres
    if settings is None:
        raise ValueError("sessions.store is postgres but sessions.postgres is not set")
    if importlib.util.find_spec("asyncpg") is None:
        raise ValueError("sessions.store is postgres but asyncpg is not installed (the runtime extra has it)")
    dsn = (read_file(settings.dsn_file) or "").strip()
    if not dsn:
        raise ValueError(
            f"sessions.store is postgres but the DSN file {settings.dsn_file} is missing or empty"
        )
    # Imported here: the module is only needed (and asyncpg only loaded) for this store.
    from agent_runtime.sessions.postgres import PostgresConfigError, PostgresSessionStore

    try:
        return PostgresSessionStore(
            dsn,
            ttl,
            config.max_turns,
            prefix=f"{agent}:",
            pool_size=settings.pool_size,
            schema_name=settings.schema_name,
            table_name=settings.table_name,
        )
    except PostgresConfigError as exc:
        raise ValueError(f"sessions.store is postgres but {exc}") from exc


async def start_sessions(store: SessionStore) -> None:
    """Connect a store that has a start step (PostgreSQL: pool and migrations); never raises."""
    start = getattr(store, "start", None)
    if start is not None:
        await start()
