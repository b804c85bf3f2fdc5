"""Upstream connection pools: one per (origin, TLS settings, connect timeout), shared by
every chain entry that names the same upstream, kept across config reloads.

Each pool is our lean HTTP/1.1 transport (``transport.py``), called directly:
httpx's ``AsyncClient.send()`` adds auth and cookie handling, redirects and an
INFO log line per call, about 180 us that an upstream call does not need.
When the environment routes the origin through a proxy, the pool is an
``httpx.AsyncClient`` with httpx's own transport instead, which knows proxies.

TLS: public CAs by default, or a private CA bundle read from a mounted file
(the only trust anchor then: a missing or invalid bundle verifies nothing,
it never falls back to the public CAs), or no verification when the provider
says so. A rotated bundle takes effect on the next request: the pool is
replaced and the old one closed once requests still using it had time to end.
"""

from __future__ import annotations

import asyncio
import logging
import ssl
import urllib.request
from collections.abc import Awaitable, Callable
from dataclasses import dataclass

import httpx

from agent_runtime.llm.transport import KEEPALIVE_EXPIRY, LeanTransport

log = logging.getLogger("agent_runtime.llm")

ReadFile = Callable[[str], str | None]

# Connections per upstream. Sized for a busy replica (one connection per
# concurrent upstream call); idle ones are closed after the keep-alive expiry.
MAX_CONNECTIONS = 512
MAX_KEEPALIVE = 256


@dataclass(slots=True, frozen=True)
class PoolKey:
    """What makes two chain entries able to share one connection pool."""

    origin: str
    ca_file: str | None
    insecure: bool
    connect: float


def origin_of(url: str) -> str:
    """``scheme://host:port`` of a URL (the port empty when implied)."""
    parsed = httpx.URL(url)
    return f"{parsed.scheme}://{parsed.host}:{parsed.port or ''}"


def proxied(origin: str) -> bool:
    """Whether the environment (``HTTPS_PROXY``, ``NO_PROXY``, ...) routes ``origin`` through a proxy."""
    proxies = urllib.request.getproxies()
    if not proxies:
        return False
    url = httpx.URL(origin)
    if url.scheme not in proxies and "all" not in proxies:
        return False
    return not urllib.request.proxy_bypass(url.host)


def tls_context(key: PoolKey, pem: str | None) -> ssl.SSLContext | bool:
    """Certificate verification for an upstream: public CAs, a private CA bundle, or none."""
    if key.insecure:
        return False
    if not key.ca_file:
        return True
    # A configured CA bundle is the only trust anchor; when it is missing or invalid,
    # nothing verifies (fail closed) rather than falling back to the public CAs.
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    if pem:
        try:
            context.load_verify_locations(cadata=pem)
        except (ssl.SSLError, ValueError):
            log.warning("CA bundle %s is not valid PEM; TLS to %s will fail", key.ca_file, key.origin)
    else:
        log.warning("CA bundle %s is missing; TLS to %s will fail", key.ca_file, key.origin)
    return context


class Upstream:
    """One connection pool to one upstream; ``send`` returns once the response head arrived."""

    def __init__(self, key: PoolKey, pem: str | None, *, use_proxy: bool) -> None:
        self.key = key
        self.pem = pem
        verify = tls_context(key, pem)
        # Through a proxy only: our transport does not speak to proxies.
        self.client: httpx.AsyncClient | None = None
        self.transport: LeanTransport | None = None
        if use_proxy:
            timeout = httpx.Timeout(connect=key.connect, read=None, write=key.connect, pool=key.connect)
            limits = httpx.Limits(
                max_connections=MAX_CONNECTIONS,
                max_keepalive_connections=MAX_KEEPALIVE,
                keepalive_expiry=KEEPALIVE_EXPIRY,
            )
            self.client = httpx.AsyncClient(
                verify=verify, limits=limits, timeout=timeout, follow_redirects=False
            )
        else:
            self.transport = LeanTransport(
                verify=verify,
                max_connections=MAX_CONNECTIONS,
                max_keepalive=MAX_KEEPALIVE,
                keepalive_expiry=KEEPALIVE_EXPIRY,
            )

    def send(self, request: httpx.Request) -> Awaitable[httpx.Response]:
        """Send ``request``; the body streams (close the response when done with it).

        Returns the transport's (or client's) own awaitable: no coroutine of ours in between.
        """
        if self.transport is not None:
            return self.transport.handle_async_request(request)
        assert self.client is not None
        return self.client.send(request, stream=True)

    async def aclose(self) -> None:
        """Close every connection of this pool."""
        if self.transport is not None:
            await self.transport.aclose()
        if self.client is not None:
            await self.client.aclose()


class UpstreamPools:
    """Every upstream's connection pool, created on first use and kept until unused."""

    def __init__(self, read_file: ReadFile) -> None:
        self._read_file = read_file
        self._pools: dict[PoolKey, Upstream] = {}
        self._retired: list[Upstream] = []
        self._retire_tasks: set[asyncio.Task[None]] = set()

    def _new(self, key: PoolKey) -> Upstream:
        pem = self._read_file(key.ca_file) if key.ca_file and not key.insecure else None
        upstream = Upstream(key, pem, use_proxy=proxied(key.origin))
        self._pools[key] = upstream
        return upstream

    def get(self, key: PoolKey, *, retire_after: float) -> Upstream:
        """The pool for ``key``; a new one when its CA bundle changed since the last call.

        ``retire_after`` (seconds) is how long a replaced pool stays open for the
        requests still using it.
        """
        upstream = self._pools.get(key)
        if upstream is None:
            return self._new(key)
        if key.ca_file and not key.insecure:
            # Follow the mounted CA bundle: read on every call (the reader caches it).
            pem = self._read_file(key.ca_file)
            if pem != upstream.pem:
                self._retire(self._pools.pop(key), delay=retire_after)
                log.info("CA bundle of %s changed: new connection pool", key.origin)
                return self._new(key)
        return upstream

    def keep_only(self, keys: set[PoolKey], *, retire_after: float) -> None:
        """Close (after ``retire_after`` seconds) the pools of upstreams no longer configured."""
        for key in [k for k in self._pools if k not in keys]:
            self._retire(self._pools.pop(key), delay=retire_after)

    def _retire(self, upstream: Upstream, delay: float) -> None:
        self._retired.append(upstream)
        try:
            loop = asyncio.get_running_loop()
        except RuntimeError:
            return  # closed by aclose()

        async def close_later() -> None:
            await asyncio.sleep(delay)
            if upstream in self._retired:
                self._retired.remove(upstream)
                await upstream.aclose()

        task = loop.create_task(close_later())
        # Keep a reference so the task is not garbage-collected while sleeping.
        self._retire_tasks.add(task)
        task.add_done_callback(self._retire_tasks.discard)

    async def aclose(self) -> None:
        """Close every pool, retired ones included."""
        for task in list(self._retire_tasks):
            task.cancel()
        upstreams = [*self._pools.values(), *self._retired]
        self._pools.clear()
        self._retired.clear()
        for upstream in upstreams:
            await upstream.aclose()
