"""Redis connections in the three deployment modes: standalone, Cluster and Sentinel.

A :class:`RedisTarget` is a :class:`~agent_runtime.config.RedisConnectionConfig` with its files
read (URL, passwords, CA); two targets are equal when they reach the same Redis the same way,
which is how a reload tells whether a client must be rebuilt. The clients are redis-py's own
(``redis.asyncio``): ``Redis`` on a ``ConnectionPool`` for standalone, ``Sentinel`` with a
``SentinelConnectionPool`` (which asks the Sentinels for the master on every new connection and
drops a connection whose server was demoted) and ``RedisCluster`` (slot map, MOVED/ASK).

Key scheme, for every user of a shared Redis (so that Cluster never splits what one atomic
operation touches): ``<prefix>{<tag>}:<part>``. Everything inside the braces picks the slot;
keys that one Lua script or transaction touches share the tag, and nothing before the tag may
hold a brace (key prefixes are validated for that):

- rate limits: ``sentient:rl:{<policy>|<subject>}:r|b|t|c`` (one subject's windows and leases);
- provider quotas: ``sentient:rl:{provider|<namespace/name>}:r|t|c``;
- sessions: ``sentient:session:<agent>:<owner>:<id>`` (one key per session, any slot);
- budgets and a response cache, when they come, follow the same rule: ``sentient:budget:{<subject>}:...``
  and ``sentient:cache:{<hash>}:...``.
"""

from __future__ import annotations

import asyncio
import ssl
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from agent_runtime.config import RedisConnectionConfig, RedisMode

if TYPE_CHECKING:
    # redis-py (with the OpenTelemetry pieces it pulls in: ~20 MB, ~0.1 s) is imported when a
    # connection is made, so a runtime that uses no Redis never loads it.
    from redis.asyncio import ConnectionPool, Redis, RedisCluster
    from redis.asyncio.retry import Retry
    from redis.asyncio.sentinel import SentinelConnectionPool

ReadFile = Callable[[str], str | None]


class RedisConfigError(ValueError):
    """A Redis connection names a file that is missing or empty."""


def _split(address: str) -> tuple[str, int]:
    host, _, port = address.rpartition(":")
    return host.strip("[]"), int(port)


@dataclass(frozen=True)
class RedisTarget:
    """A resolved Redis connection: addresses and secret values in memory only (never in repr)."""

    mode: RedisMode = "standalone"
    url: str | None = field(default=None, repr=False)
    nodes: tuple[tuple[str, int], ...] = ()
    sentinels: tuple[tuple[str, int], ...] = ()
    master_name: str | None = None
    username: str | None = None
    password: str | None = field(default=None, repr=False)
    sentinel_password: str | None = field(default=None, repr=False)
    tls: bool = False
    ca_pem: str | None = field(default=None, repr=False)
    insecure_skip_verify: bool = False

    @classmethod
    def standalone(cls, url: str) -> RedisTarget:
        """One server at ``url`` (``redis://`` or ``rediss://``, password and db included)."""
        return cls(mode="standalone", url=url.strip())

    def describe(self) -> str:
        """Where this target is, for logs: addresses only, never a URL (it may hold a password)."""
        if self.mode == "cluster":
            return "cluster " + ",".join(f"{h}:{p}" for h, p in self.nodes)
        if self.mode == "sentinel":
            return f"sentinel master {self.master_name} via " + ",".join(
                f"{h}:{p}" for h, p in self.sentinels
            )
        return "standalone"

    def _tls_kwargs(self) -> dict[str, Any]:
        if not self.tls:
            return {}
        kwargs: dict[str, Any] = {"ssl": True}
        if self.ca_pem:
            kwargs["ssl_ca_data"] = self.ca_pem
        if self.insecure_skip_verify:
            kwargs["ssl_cert_reqs"] = ssl.CERT_NONE
            kwargs["ssl_check_hostname"] = False
        return kwargs

    def _auth_kwargs(self) -> dict[str, Any]:
        kwargs: dict[str, Any] = {}
        if self.username:
            kwargs["username"] = self.username
        if self.password:
            kwargs["password"] = self.password
        return kwargs

    def connection_pool(
        self,
        *,
        max_connections: int,
        socket_timeout: float,
        connect_timeout: float,
        retry: Retry | None = None,
    ) -> ConnectionPool:
        """A pool of connections to the server (standalone) or to the current master (sentinel)."""
        common: dict[str, Any] = {
            "max_connections": max_connections,
            "socket_timeout": socket_timeout,
            "socket_connect_timeout": connect_timeout,
        }
        if retry is not None:
            common["retry"] = retry
        from redis.asyncio import ConnectionPool
        from redis.asyncio.sentinel import Sentinel, SentinelConnectionPool

        if self.mode == "standalone":
            assert self.url is not None
            return ConnectionPool.from_url(self.url, **common)
        if self.mode == "sentinel":
            assert self.master_name is not None
            sentinel_kwargs: dict[str, Any] = {
                "socket_timeout": socket_timeout,
                "socket_connect_timeout": connect_timeout,
                **self._tls_kwargs(),
            }
            if self.sentinel_password:
                sentinel_kwargs["password"] = self.sentinel_password
            manager = Sentinel(list(self.sentinels), sentinel_kwargs=sentinel_kwargs)
            kwargs = {**common, **self._auth_kwargs(), **self._tls_kwargs()}
            return SentinelConnectionPool(self.master_name, manager, **kwargs)
        raise ValueError("a Redis Cluster has no single connection pool; use client()")

    def client(
        self, *, max_connections: int = 32, socket_timeout: float = 2.0, connect_timeout: float = 2.0
    ) -> Redis | RedisCluster:
        """A redis-py client for this target (``RedisCluster`` in cluster mode)."""
        from redis.asyncio import Redis, RedisCluster
        from redis.asyncio.cluster import ClusterNode
        from redis.asyncio.retry import Retry
        from redis.backoff import NoBackoff
        from redis.maint_notifications import MaintNotificationsConfig

        if self.mode == "cluster":
            return RedisCluster(
                startup_nodes=[ClusterNode(host, port) for host, port in self.nodes],
                max_connections=max_connections,
                socket_timeout=socket_timeout,
                socket_connect_timeout=connect_timeout,
                # A node that fails is dropped from the slot map and the map is refreshed; a few
                # quick attempts ride over a promotion without holding a request for long.
                retry=Retry(NoBackoff(), 2),  # type: ignore[arg-type]  # (types-redis lags redis-py)
                # The handshake of maintenance notifications (a managed-service feature) fails
                # on open-source Redis and, under a burst of new connections, broke connections
                # that other callers were using.
                maint_notifications_config=MaintNotificationsConfig(enabled=False),  # type: ignore[call-arg]
                **self._auth_kwargs(),
                **self._tls_kwargs(),
            )
        pool = self.connection_pool(
            max_connections=max_connections, socket_timeout=socket_timeout, connect_timeout=connect_timeout
        )
        return Redis(connection_pool=pool)


class ClusterStart:
    """Initialise a ``RedisCluster`` once, before the first burst of commands.

    redis-py initialises a cluster client lazily on its first command; under a burst of first
    commands some of them ran on connections that the initialisation was replacing (measured:
    about one in ten of 400 concurrent first commands failed). Callers await :meth:`ready` first.
    """

    def __init__(self) -> None:
        self._lock = asyncio.Lock()
        self._done = False

    async def ready(self, client: RedisCluster) -> None:
        """Return once ``client`` knows the slot map (raises what the initialisation raises)."""
        if self._done:
            return
        async with self._lock:
            if not self._done:
                await client.initialize()
                self._done = True


# Sentinel mode: how often the Sentinels are asked which server is the master.
MASTER_CHECK_INTERVAL = 1.0


class MasterWatch:
    """Keep a Sentinel pool's connections on the current master.

    A ``SentinelConnectionPool`` asks for the master only when it opens a connection, so open
    connections would keep writing to a replaced master (after a forced failover, or across a
    partition) until the Sentinels turn it into a replica, seconds later, and those writes are
    lost. Once started (from a running loop), a task asks every ``MASTER_CHECK_INTERVAL``
    seconds; a changed answer closes the idle connections, and :meth:`stale` tells a caller to
    drop a connection it holds. For any other pool it does nothing.
    """

    def __init__(self, pool: ConnectionPool | None) -> None:
        self._pool: SentinelConnectionPool | None = None
        if pool is not None:
            # A pool exists, so redis-py is loaded already.
            from redis.asyncio.sentinel import SentinelConnectionPool

            self._pool = pool if isinstance(pool, SentinelConnectionPool) else None
        self._task: asyncio.Task[None] | None = None

    def start(self) -> None:
        """Start the watch (idempotent; a no-op for a pool that is not a Sentinel pool)."""
        if self._pool is not None and self._task is None:
            self._task = asyncio.get_running_loop().create_task(self._watch(self._pool))

    def stale(self, connection: Any) -> bool:
        """True when ``connection`` points at a server that is no longer the master."""
        if self._pool is None or self._pool.master_address is None:
            return False
        return bool(self._pool.master_address != (connection.host, connection.port))

    @staticmethod
    async def _watch(pool: SentinelConnectionPool) -> None:
        from redis.exceptions import RedisError

        # Errors that mean "the Sentinels cannot answer now".
        sentinel_down = (RedisError, OSError, asyncio.TimeoutError)
        while True:
            await asyncio.sleep(MASTER_CHECK_INTERVAL)
            try:
                # A changed address also closes the idle connections to the old master.
                await pool.get_master_address()
            except sentinel_down:
                pass  # the commands' own connections fail and report the outage

    def stop(self) -> None:
        """Stop the watch."""
        if self._task is not None and not self._task.done():
            self._task.cancel()


def _read(read_file: ReadFile, name: str | None, what: str) -> str | None:
    if name is None:
        return None
    text = read_file(name)
    if text is None or not text.strip():
        raise RedisConfigError(f"{what}: file {name} is missing or empty")
    return text


def resolve_target(config: RedisConnectionConfig, read_file: ReadFile) -> RedisTarget:
    """Read the files ``config`` names; ``RedisConfigError`` names a missing one (never a value)."""
    if config.mode == "standalone":
        url = _read(read_file, config.url_file, "redis url")
        assert url is not None  # the config requires urlFile in this mode
        return RedisTarget.standalone(url)
    password = _read(read_file, config.password_file, "redis password")
    sentinel_password = _read(read_file, config.sentinel_password_file, "redis sentinel password")
    ca = _read(read_file, config.tls.ca_file, "redis CA")
    return RedisTarget(
        mode=config.mode,
        nodes=tuple(_split(n) for n in config.nodes),
        sentinels=tuple(_split(s) for s in config.sentinels),
        master_name=config.master_name,
        username=config.username,
        # Files end with a newline more often than passwords do.
        password=password.rstrip("\r\n") if password is not None else None,
        sentinel_password=sentinel_password.rstrip("\r\n") if sentinel_password is not None else None,
        tls=config.tls.enabled,
        ca_pem=ca,
        insecure_skip_verify=config.tls.insecure_skip_verify,
    )


def try_resolve_target(config: RedisConnectionConfig | None, read_file: ReadFile) -> RedisTarget | None:
    """:func:`resolve_target`, or None when there is no connection or a file is missing."""
    if config is None:
        return None
    try:
        return resolve_target(config, read_file)
    except RedisConfigError:
        return None
