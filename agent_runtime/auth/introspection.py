"""Opaque access tokens, checked by the issuer (RFC 7662 token introspection), with a short cache.

The runtime authenticates to the introspection endpoint as a client (HTTP Basic, RFC 6749
2.3.1) with a secret read from the mounted credentials; neither the secret nor a token is
ever logged. Answers are cached by a digest of the token (never the token itself):

- an active answer for ``cacheTTL``, but never past the token's own ``exp``;
- an inactive (or refused) answer for ``negativeCacheTTL``, so that a caller hammering
  with a bad token costs one call to the issuer per interval;
- at most ``maxEntries`` answers, the least recently used dropped first.

At most :data:`MAX_CALLS_IN_FLIGHT` calls go to the issuer at once: every made-up token is new
to the cache, so without a bound a flood of them would open one call per request.

A revoked token is therefore refused at the latest ``cacheTTL`` after its revocation.
"""

from __future__ import annotations

import asyncio
import functools
import hashlib
import logging
import time
from collections import OrderedDict
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from typing import Any

import httpx

from agent_runtime.auth.apikeys import ReadFile
from agent_runtime.auth.oidc import DiscoveryError
from agent_runtime.auth.principal import AuthError
from agent_runtime.config import IntrospectionConfig, duration_seconds

log = logging.getLogger("agent_runtime.auth")

# How much of an answer is read at most: an introspection answer is a few hundred bytes.
MAX_ANSWER_BYTES = 64 * 1024
# Calls to the issuer at once. A token that waits longer than the call timeout for a turn is
# refused as when the issuer cannot be asked (503, not cached): the issuer sees a bounded load,
# and genuine callers whose tokens are cached are not held up by the queue at all.
MAX_CALLS_IN_FLIGHT = 16


@dataclass(frozen=True, slots=True)
class _Cached:
    claims: dict[str, Any] | None  # None: inactive
    reason: str
    until: float


def _token_key(token: str) -> bytes:
    return hashlib.sha256(token.encode()).digest()


def _audiences(claims: dict[str, Any]) -> list[str]:
    aud = claims.get("aud")
    if isinstance(aud, str):
        return [aud]
    if isinstance(aud, list):
        return [a for a in aud if isinstance(a, str)]
    return []


class Introspector:
    """Checks opaque tokens at the issuer's introspection endpoint; answers cached (bounded, short)."""

    def __init__(
        self,
        config: IntrospectionConfig,
        issuer: str,
        audiences: Sequence[str],
        read_file: ReadFile,
        client: httpx.AsyncClient,
        endpoint: Callable[[], Awaitable[str]],
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.config = config
        self._issuer = issuer
        self._audiences = frozenset(audiences)
        self._read_file = read_file
        self._client = client
        self._endpoint = endpoint
        self._clock = clock
        self._ttl = duration_seconds(config.cache_ttl)
        self._negative_ttl = duration_seconds(config.negative_cache_ttl)
        self._timeout = duration_seconds(config.timeout)
        self._cache: OrderedDict[bytes, _Cached] = OrderedDict()
        # One call per token at a time: concurrent requests with the same new token share it.
        self._pending: dict[bytes, asyncio.Future[_Cached]] = {}
        self._turns = asyncio.Semaphore(MAX_CALLS_IN_FLIGHT)

    def __len__(self) -> int:
        return len(self._cache)

    async def claims(self, token: str) -> dict[str, Any]:
        """The claims of an active token issued for this agent; raises :class:`AuthError`."""
        key = _token_key(token)
        now = self._clock()
        cached = self._cache.get(key)
        if cached is not None and cached.until > now:
            self._cache.move_to_end(key)
        else:
            pending = self._pending.get(key)
            if pending is None:
                # The call runs as a task of its own: a caller that goes away (its request task
                # cancelled) stops waiting, while the callers sharing the call still get its answer.
                pending = asyncio.ensure_future(self._ask_and_keep(key, token, now))
                self._pending[key] = pending
                pending.add_done_callback(functools.partial(self._asked, key))
            cached = await asyncio.shield(pending)
        if cached.claims is None:
            status = 403 if cached.reason == "wrong_audience" else 401
            message = "token not issued for this agent" if status == 403 else "token not active"
            raise AuthError(status, cached.reason, message)
        return cached.claims

    async def _ask_and_keep(self, key: bytes, token: str, now: float) -> _Cached:
        cached = await self._ask(token, now)
        if cached.until > now:
            self._remember(key, cached)
        return cached

    def _asked(self, key: bytes, task: asyncio.Future[_Cached]) -> None:
        if self._pending.get(key) is task:
            del self._pending[key]
        if not task.cancelled():
            task.exception()  # retrieved: no "never retrieved" warning when every caller left

    def _remember(self, key: bytes, entry: _Cached) -> None:
        self._cache[key] = entry
        self._cache.move_to_end(key)
        while len(self._cache) > self.config.max_entries:
            self._cache.popitem(last=False)

    async def _ask(self, token: str, now: float) -> _Cached:
        """One call to the endpoint; a transport failure is a 503-class refusal, not cached."""
        secret = (self._read_file(self.config.client_secret_file) or "").strip()
        if not secret:
            log.error(
                "introspection client secret file %s is missing or empty", self.config.client_secret_file
            )
            raise AuthError(503, "introspection_unavailable", "token check unavailable")
        try:
            async with asyncio.timeout(self._timeout):
                await self._turns.acquire()
        except TimeoutError:
            raise AuthError(503, "introspection_unavailable", "token check unavailable") from None
        try:
            return await self._call(token, secret, now)
        finally:
            self._turns.release()

    async def _call(self, token: str, secret: str, now: float) -> _Cached:
        try:
            url = await self._endpoint()
            response = await self._client.post(
                url,
                data={"token": token, "token_type_hint": "access_token"},
                auth=(self.config.client_id, secret),
                headers={"Accept": "application/json"},
                timeout=self._timeout,
            )
        except (httpx.HTTPError, DiscoveryError) as exc:
            log.warning("token introspection failed: %s", type(exc).__name__)
            raise AuthError(503, "introspection_unavailable", "token check unavailable") from exc
        if response.status_code != 200 or len(response.content) > MAX_ANSWER_BYTES:
            # 401/403 here mean the runtime's own client credentials are wrong: say so in the log.
            log.warning("token introspection answered HTTP %d", response.status_code)
            raise AuthError(503, "introspection_unavailable", "token check unavailable")
        try:
            claims = response.json()
        except ValueError as exc:
            raise AuthError(503, "introspection_unavailable", "token check unavailable") from exc
        if not isinstance(claims, dict):
            raise AuthError(503, "introspection_unavailable", "token check unavailable")
        return self._judge(claims, now)

    def _judge(self, claims: dict[str, Any], now: float) -> _Cached:
        negative = now + self._negative_ttl
        if claims.get("active") is not True:
            return _Cached(None, "token_inactive", negative)
        exp = claims.get("exp")
        if isinstance(exp, int | float) and not isinstance(exp, bool) and exp <= now:
            return _Cached(None, "token_expired", negative)
        issuer = claims.get("iss")
        if issuer is not None and issuer != self._issuer:
            return _Cached(None, "wrong_issuer", negative)
        if not self._audiences.intersection(_audiences(claims)):
            return _Cached(None, "wrong_audience", negative)
        until = now + self._ttl
        if isinstance(exp, int | float) and not isinstance(exp, bool):
            until = min(until, float(exp))
        return _Cached(claims, "", until)
