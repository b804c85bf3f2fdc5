"""Shared session store on PostgreSQL: one row per session, trimmed and expired in one statement.

The driver is asyncpg (imported only when this store is built): one wheel with its own
connection pool and no libpq, and the fastest of the asyncio drivers.

A row holds the owner-prefixed session key, the turns (an array of JSON documents) and ``expires_at``. An
append is a single ``INSERT ... ON CONFLICT DO UPDATE``: the row lock it takes orders concurrent
appends to one session, the array of turns is cut to the last ``max_turns`` turns and ``expires_at`` moves
to now + TTL, all with the database's clock, so replicas with drifting clocks agree. A row past
``expires_at`` is invisible at once (reads filter on it, an append to it starts afresh), as a
Redis key is once its TTL runs out; a sweeper in every replica deletes such rows in bounded
batches every ``sweep_interval`` seconds (``FOR UPDATE SKIP LOCKED``: replicas sweeping together
never wait on each other nor on an append).

Failures behave as the Redis store's: every database error, refused connection or timeout
(connect, statement, or waiting for a free pooled connection) is a :class:`SessionStoreError`
naming the error's type only, so the request answers without history or without storing the
turn. The DSN and its password appear in no message.
"""

# SQL is built with the table's name, which quote() checked and quoted (see postgres_migrations).
# ruff: noqa: S608

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Sequence
from typing import Any
from urllib.parse import parse_qs, urlsplit

from agent_runtime.sessions.base import SessionStoreError, Turn, decode_turns, encode_turn, valid_key
from agent_runtime.sessions.postgres_migrations import migrate, qualified

log = logging.getLogger("agent_runtime.sessions.postgres")

# As the Redis store's socket timeouts: a slow database costs a request at most this per call.
DEFAULT_TIMEOUT = 2.0
DEFAULT_SWEEP_INTERVAL = 60.0
# After a failed connect, requests fail at once for this long instead of each waiting for its own
# connect timeout (they would queue behind one another on the opening lock).
REOPEN_BACKOFF = 1.0
SWEEP_BATCH = 1000
# A sweep deletes at most this many batches in a row, then waits for the next interval.
SWEEP_MAX_BATCHES = 10
DSN_SCHEMES = ("postgresql", "postgres")


class PostgresConfigError(ValueError):
    """The DSN is not usable (the message never contains it)."""


def check_dsn(dsn: str) -> None:
    """Refuse a DSN asyncpg cannot read; the error names the problem, never the DSN."""
    try:
        scheme = urlsplit(dsn).scheme
    except ValueError as exc:
        raise PostgresConfigError("the PostgreSQL DSN is not a URL") from exc
    if scheme not in DSN_SCHEMES:
        raise PostgresConfigError(
            "the PostgreSQL DSN must be a postgresql:// URL (key=value connection strings are not read)"
        )


def secrets_of(dsn: str) -> list[str]:
    """The parts of a DSN that must never be shown: the whole of it and its passwords."""
    found = [dsn]
    with contextlib.suppress(ValueError):
        parts = urlsplit(dsn)
        if parts.password:
            found.append(parts.password)
        found.extend(parse_qs(parts.query).get("password", []))
    return [s for s in found if s]


def masked(text: str, secrets: Sequence[str]) -> str:
    """``text`` with every secret replaced (longest first, so the DSN goes before its password)."""
    for secret in sorted(secrets, key=len, reverse=True):
        text = text.replace(secret, "***")
    return text


def _unavailable(exc: BaseException) -> SessionStoreError:
    if isinstance(exc, TimeoutError):
        return SessionStoreError("session store unavailable: TimeoutError (database or connection pool)")
    return SessionStoreError(f"session store unavailable: {type(exc).__name__}")


class PostgresSessionStore:
    """Shared store: one PostgreSQL row per session, behind a pool of connections."""

    kind = "postgres"

    def __init__(
        self,
        dsn: str,
        ttl_seconds: float,
        max_turns: int,
        *,
        prefix: str = "",
        pool_size: int = 10,
        schema_name: str = "public",
        table_name: str = "sentient_sessions",
        timeout: float = DEFAULT_TIMEOUT,
        sweep_interval: float = DEFAULT_SWEEP_INTERVAL,
    ) -> None:
        check_dsn(dsn)
        self.dsn = dsn
        self._secrets = secrets_of(dsn)
        # Whole seconds, as the Redis store's EXPIRE: both stores expire a session alike.
        self.ttl = max(1, int(ttl_seconds))
        self.max_turns = max_turns
        self.prefix = prefix
        self.pool_size = pool_size
        self.schema_name = schema_name
        self.table_name = table_name
        self.timeout = timeout
        self.sweep_interval = sweep_interval
        self.schema_version: int | None = None
        self._pool: Any = None
        self._opening = asyncio.Lock()
        self._closed_until = 0.0
        self._last_failure: SessionStoreError | None = None
        self._sweeper: asyncio.Task[None] | None = None
        table = qualified(schema_name, table_name)
        self._select = f"SELECT turns FROM {table} WHERE session_key = $1 AND expires_at > now()"
        # The turns are a text[] of JSON documents, as the Redis store's list items: text keeps any
        # content jsonb would refuse (a NUL character), and an array slice does the trimming.
        self._append = (
            f"INSERT INTO {table} AS s (session_key, turns, expires_at)"
            " VALUES ($1, $2::text[], now() + make_interval(secs => $3))"
            " ON CONFLICT (session_key) DO UPDATE SET"
            " turns = (SELECT joined[greatest(1, cardinality(joined) - $4 + 1):] FROM (SELECT"
            "   CASE WHEN s.expires_at > now() THEN s.turns || excluded.turns ELSE excluded.turns END"
            "   AS joined) AS j),"
            " expires_at = excluded.expires_at"
        )
        self._sweep = (
            f"DELETE FROM {table} WHERE session_key IN ("
            f" SELECT session_key FROM {table} WHERE expires_at <= now()"
            " ORDER BY expires_at LIMIT $1 FOR UPDATE SKIP LOCKED)"
        )

    def __repr__(self) -> str:
        return f"PostgresSessionStore(table={self.schema_name}.{self.table_name}, pool_size={self.pool_size})"

    def describe(self, exc: BaseException) -> str:
        """An error's type and message with the DSN and its password masked, for a log line."""
        return f"{type(exc).__name__}: {masked(str(exc), self._secrets)}"

    async def start(self) -> None:
        """Open the pool and apply the migrations now; an unreachable database is retried on use.

        As with Redis the runtime starts anyway and answers without history until the
        database is back; the reason is logged once here, without the DSN.
        """
        try:
            await self._ready()
        except SessionStoreError as exc:
            cause = exc.__cause__ if exc.__cause__ is not None else exc
            log.warning("session database not ready; retrying on use: %s", self.describe(cause))

    async def _ready(self) -> Any:
        if self._pool is not None:
            return self._pool
        self._fail_fast()
        async with self._opening:
            if self._pool is None:
                self._fail_fast()
                try:
                    self._pool = await self._open()
                except Exception as exc:
                    failure = _unavailable(exc)
                    self._last_failure, self._closed_until = failure, time.monotonic() + REOPEN_BACKOFF
                    raise failure from exc
                self._sweeper = asyncio.get_running_loop().create_task(self._sweep_forever())
        return self._pool

    def _fail_fast(self) -> None:
        if self._last_failure is not None and time.monotonic() < self._closed_until:
            raise SessionStoreError(str(self._last_failure)) from self._last_failure.__cause__

    async def _open(self) -> Any:
        import asyncpg  # lazily: only agents that keep sessions in PostgreSQL need the driver

        pool = await asyncpg.create_pool(
            self.dsn,
            min_size=0,
            max_size=self.pool_size,
            timeout=self.timeout,
            command_timeout=self.timeout,
            max_inactive_connection_lifetime=300.0,
            server_settings={"application_name": "sentient-runtime"},
        )
        try:
            async with pool.acquire(timeout=self.timeout) as conn:
                self.schema_version = await migrate(conn, self.schema_name, self.table_name)
        except BaseException:
            pool.terminate()
            raise
        return pool

    async def get(self, session_id: str) -> list[Turn]:
        """History of ``session_id``."""
        if not valid_key(session_id):
            return []
        try:
            pool = await self._ready()
            async with pool.acquire(timeout=self.timeout) as conn:
                raw = await conn.fetchval(self._select, self.prefix + session_id)
        except SessionStoreError:
            raise
        except Exception as exc:
            raise _unavailable(exc) from exc
        return decode_turns(raw or ())

    async def append(self, session_id: str, turns: Sequence[Turn]) -> None:
        """Add turns to ``session_id``."""
        if not valid_key(session_id) or not turns:
            return
        # A new row takes the VALUES as they are: cut them here too.
        values = [encode_turn(t) for t in turns[-self.max_turns :]]
        try:
            pool = await self._ready()
            async with pool.acquire(timeout=self.timeout) as conn:
                await conn.execute(
                    self._append, self.prefix + session_id, values, float(self.ttl), self.max_turns
                )
        except SessionStoreError:
            raise
        except Exception as exc:
            raise _unavailable(exc) from exc

    async def sweep(self) -> int:
        """Delete expired rows in bounded batches; how many went."""
        pool = await self._ready()
        total = 0
        for _ in range(SWEEP_MAX_BATCHES):
            async with pool.acquire(timeout=self.timeout) as conn:
                status = await conn.execute(self._sweep, SWEEP_BATCH)
            deleted = int(status.rsplit(" ", 1)[-1])
            total += deleted
            if deleted < SWEEP_BATCH:
                break
        return total

    async def _sweep_forever(self) -> None:
        while True:
            await asyncio.sleep(self.sweep_interval)
            try:
                deleted = await self.sweep()
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                # The next interval tries again; reads never see expired rows meanwhile.
                log.debug("session sweep failed: %s", self.describe(exc))
                continue
            if deleted:
                log.debug("swept %d expired sessions", deleted)

    async def aclose(self) -> None:
        """Stop the sweeper and close the pool."""
        if self._sweeper is not None:
            self._sweeper.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._sweeper
            self._sweeper = None
        pool, self._pool = self._pool, None
        if pool is not None:
            try:
                await asyncio.wait_for(pool.close(), timeout=self.timeout)
            except Exception:
                pool.terminate()
