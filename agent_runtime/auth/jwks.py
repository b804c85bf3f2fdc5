"""The issuer's signing keys (JWKS): fetched asynchronously, cached, refreshed on an unknown ``kid``."""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import httpx

from agent_runtime.auth.oidc import DiscoveryError

if TYPE_CHECKING:
    # PyJWT (and the cryptography it loads, ~10 MB) is imported when a token is first checked:
    # a runtime that takes API keys only never loads it.
    import jwt

log = logging.getLogger("agent_runtime.auth")

# Algorithms accepted per key type (``kty`` of the JWK); a JWK naming its ``alg`` allows only that one.
_ALGORITHMS_BY_KEY_TYPE: dict[str, frozenset[str]] = {
    "RSA": frozenset({"RS256", "RS384", "RS512", "PS256", "PS384", "PS512"}),
    "EC": frozenset({"ES256", "ES384", "ES512"}),
    "OKP": frozenset({"EdDSA"}),
}
JWKS_TTL_SECONDS = 300.0
JWKS_MIN_REFRESH_SECONDS = 10.0


@dataclass(frozen=True, slots=True)
class SigningKey:
    """One public key of the issuer and the algorithms a token signed with it may name."""

    key: Any
    algorithms: frozenset[str]


def _algorithms_for(jwk: jwt.PyJWK, declared: object) -> frozenset[str]:
    family = _ALGORITHMS_BY_KEY_TYPE.get(str(jwk.key_type), frozenset())
    if isinstance(declared, str):
        return family & {declared}
    return family


# A JWKS with more keys than this is cut to its first keys: the cache stays bounded whatever
# the issuer (or whoever answers at its URL) serves.
MAX_KEYS = 64


class JWKSCache:
    """Signing keys of the issuer, fetched asynchronously and cached.

    ``url`` is a fixed JWKS URL, or a coroutine giving it (OIDC discovery, resolved at the first
    fetch). An unknown ``kid`` triggers a refetch (key rotation), never more often than
    ``min_refresh`` seconds, so that garbage tokens cannot turn the runtime into a JWKS flooder.
    """

    def __init__(
        self,
        url: str | Callable[[], Awaitable[str]],
        client: httpx.AsyncClient | None = None,
        *,
        ttl: float = JWKS_TTL_SECONDS,
        min_refresh: float = JWKS_MIN_REFRESH_SECONDS,
    ) -> None:
        self._url = url
        self._client = client
        self._ttl = ttl
        self._min_refresh = min(min_refresh, ttl)
        self._keys: dict[str, SigningKey] = {}
        self._fetched_at = -float("inf")
        self._lock = asyncio.Lock()

    async def _resolve_url(self) -> str:
        return self._url if isinstance(self._url, str) else await self._url()

    async def _fetch(self) -> None:
        import jwt

        url = await self._resolve_url()
        client = self._client or httpx.AsyncClient(timeout=5.0)
        try:
            response = await client.get(url)
            response.raise_for_status()
            document = response.json()
            jwt.PyJWKSet.from_dict(document)  # refuses a document with no usable key
        finally:
            if self._client is None:
                await client.aclose()
        keys: dict[str, SigningKey] = {}
        for raw in document["keys"][:MAX_KEYS]:
            try:
                jwk = jwt.PyJWK.from_dict(raw)
            except jwt.PyJWTError:
                continue
            keys[jwk.key_id or ""] = SigningKey(jwk.key, _algorithms_for(jwk, raw.get("alg")))
        self._keys = keys
        self._fetched_at = time.monotonic()

    async def key_for(self, kid: str | None) -> SigningKey | None:
        """The signing key with ``kid`` (or the only key when the token names none)."""
        import jwt

        now = time.monotonic()
        stale = now - self._fetched_at > self._ttl
        unknown = (kid or "") not in self._keys and not (kid is None and len(self._keys) == 1)
        if stale or (unknown and now - self._fetched_at > self._min_refresh):
            async with self._lock:
                if time.monotonic() - self._fetched_at > self._min_refresh:
                    try:
                        await self._fetch()
                    except (
                        httpx.HTTPError,
                        jwt.PyJWKSetError,
                        DiscoveryError,
                        ValueError,
                        KeyError,
                        TypeError,
                    ) as exc:
                        # Keep the keys we had: a JWKS outage must not log everybody out.
                        log.warning("JWKS fetch failed: %s", type(exc).__name__)
                        self._fetched_at = time.monotonic()
        if kid is None and len(self._keys) == 1:
            return next(iter(self._keys.values()))
        return self._keys.get(kid or "")
