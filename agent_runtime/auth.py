"""Caller authentication: API keys (bound hashed) and JWT (issuer, audience, JWKS).

API keys arrive as ``Authorization: Bearer <key>`` or ``X-API-Key: <key>``.
The pod holds only their SHA-256 (``apikeys.json``), so a leaked ConfigMap or
Secret does not leak a usable key. A bearer token with three dot-separated
parts is treated as a JWT when JWT is configured.

Statuses: 401 when no acceptable credential is presented (missing, unknown
key, bad signature, expired, untrusted issuer); 403 when a genuine token is
presented that was issued for another audience.
"""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import json
import logging
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

import httpx
import jwt

from agent_runtime.config import AuthRuntimeConfig
from agent_runtime.placeholders import is_placeholder

log = logging.getLogger("agent_runtime.auth")

ReadFile = Callable[[str], "str | None"]

# Algorithms accepted per key type (``kty`` of the JWK); a JWK naming its ``alg`` allows only that one.
_ALGORITHMS_BY_KEY_TYPE: dict[str, frozenset[str]] = {
    "RSA": frozenset({"RS256", "RS384", "RS512", "PS256", "PS384", "PS512"}),
    "EC": frozenset({"ES256", "ES384", "ES512"}),
    "OKP": frozenset({"EdDSA"}),
}
JWKS_TTL_SECONDS = 300.0
# Unknown ``kid``s trigger a refetch (key rotation), but not more often than this,
# so that garbage tokens cannot turn the runtime into a JWKS flooder.
JWKS_MIN_REFRESH_SECONDS = 10.0


@dataclass(frozen=True, slots=True)
class Principal:
    """An authenticated caller: ``kind`` is ``apiKey``, ``jwt`` or ``anonymous``."""

    id: str
    kind: str
    tier: str | None = None


ANONYMOUS = Principal(id="anonymous", kind="anonymous", tier=None)


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


class AuthError(Exception):
    """The caller is refused; ``reason`` is a short stable word for metrics and the audit log."""

    def __init__(self, status: int, reason: str, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.reason = reason
        self.message = message


def hash_api_key(key: str) -> str:
    """Hex SHA-256 of an API key, as bound in ``apikeys.json``."""
    return hashlib.sha256(key.encode()).hexdigest()


# The placeholders the project's own templates and docs print: the file holds only digests, so
# these are recognised at load by their digest; any other placeholder is refused when presented.
_TEMPLATE_PLACEHOLDERS = (
    "REPLACE-WITH-A-LONG-RANDOM-KEY",
    "REPLACE-WITH-YOUR-PROVIDER-KEY",
    "REPLACE-WITH-YOUR-KEY",
    "REPLACEME",
    "YOUR_KEY",
    "YOUR-API-KEY",
    "changeme",
    "placeholder",
)
_PLACEHOLDER_DIGESTS = frozenset(hashlib.sha256(p.encode()).digest() for p in _TEMPLATE_PLACEHOLDERS)


@dataclass(frozen=True, slots=True)
class _KeyEntry:
    key_id: str
    digest: bytes
    tier: str | None


class APIKeyTable:
    """The parsed ``apikeys.json``, re-parsed only when the file content changes."""

    def __init__(self, read_file: ReadFile, file_name: str) -> None:
        self._read_file = read_file
        self._file_name = file_name
        self._source: str | None = None
        self._by_digest: dict[bytes, _KeyEntry] = {}

    def _entries(self) -> dict[bytes, _KeyEntry]:
        text = self._read_file(self._file_name)
        # CredentialFiles returns the same str object until the file changes,
        # so an identity check makes the common case free.
        if text is not self._source:
            self._by_digest = self._parse(text)
            self._source = text
        return self._by_digest

    def _parse(self, text: str | None) -> dict[bytes, _KeyEntry]:
        if not text:
            return {}
        try:
            raw = json.loads(text)
        except ValueError:
            log.error("API key file %s is not valid JSON; no API key is accepted", self._file_name)
            return {}
        table: dict[bytes, _KeyEntry] = {}
        if not isinstance(raw, dict):
            return table
        for key_id, entry in raw.items():
            if not isinstance(entry, dict) or not isinstance(entry.get("sha256"), str):
                continue
            try:
                digest = bytes.fromhex(entry["sha256"])
            except ValueError:
                continue
            if digest in _PLACEHOLDER_DIGESTS:
                log.warning(
                    "API key %r in %s is a template placeholder; it never authenticates: "
                    "put a long random key in the agent's API-key Secret",
                    str(key_id),
                    self._file_name,
                )
                continue
            tier = entry.get("tier")
            table[digest] = _KeyEntry(str(key_id), digest, tier if isinstance(tier, str) else None)
        return table

    def lookup(self, key: str) -> _KeyEntry | None:
        """The entry of a presented key, or None."""
        digest = hashlib.sha256(key.encode()).digest()
        entry = self._entries().get(digest)
        # The dict lookup is keyed by a hash of the secret: its timing can only
        # reveal facts about SHA-256 outputs of the guess, not about a stored
        # key. The final comparison is constant-time anyway.
        if entry is None or not hmac.compare_digest(entry.digest, digest):
            return None
        if is_placeholder(key):
            # A key someone bound from a template unchanged: refuse it and say which one (never its value).
            log.warning(
                "API key %r in %s is a placeholder; it never authenticates: "
                "put a long random key in the agent's API-key Secret",
                entry.key_id,
                self._file_name,
            )
            return None
        return entry

    def __len__(self) -> int:
        return len(self._entries())


class JWKSCache:
    """Signing keys of the issuer, fetched asynchronously and cached."""

    def __init__(self, url: str, client: httpx.AsyncClient | None = None) -> None:
        self.url = url
        self._client = client
        self._keys: dict[str, SigningKey] = {}
        self._fetched_at = 0.0
        self._lock = asyncio.Lock()

    async def _fetch(self) -> None:
        client = self._client or httpx.AsyncClient(timeout=5.0)
        try:
            response = await client.get(self.url)
            response.raise_for_status()
            document = response.json()
            jwt.PyJWKSet.from_dict(document)  # refuses a document with no usable key
        finally:
            if self._client is None:
                await client.aclose()
        keys: dict[str, SigningKey] = {}
        for raw in document["keys"]:
            try:
                jwk = jwt.PyJWK.from_dict(raw)
            except jwt.PyJWTError:
                continue
            keys[jwk.key_id or ""] = SigningKey(jwk.key, _algorithms_for(jwk, raw.get("alg")))
        self._keys = keys
        self._fetched_at = time.monotonic()

    async def key_for(self, kid: str | None) -> SigningKey | None:
        """The signing key with ``kid`` (or the only key when the token names none)."""
        now = time.monotonic()
        stale = now - self._fetched_at > JWKS_TTL_SECONDS
        unknown = (kid or "") not in self._keys and not (kid is None and len(self._keys) == 1)
        if stale or (unknown and now - self._fetched_at > JWKS_MIN_REFRESH_SECONDS):
            async with self._lock:
                if time.monotonic() - self._fetched_at > min(JWKS_MIN_REFRESH_SECONDS, JWKS_TTL_SECONDS):
                    try:
                        await self._fetch()
                    except (httpx.HTTPError, jwt.PyJWKSetError, ValueError) as exc:
                        # Keep the keys we had: a JWKS outage must not log everybody out.
                        log.warning("JWKS fetch from %s failed: %s", self.url, type(exc).__name__)
                        self._fetched_at = time.monotonic()
        if kid is None and len(self._keys) == 1:
            return next(iter(self._keys.values()))
        return self._keys.get(kid or "")


class Authenticator:
    """Authenticates callers from request headers according to the auth config."""

    def __init__(
        self,
        config: AuthRuntimeConfig,
        read_file: ReadFile,
        jwks: JWKSCache | None = None,
    ) -> None:
        self.config = config
        self._keys = APIKeyTable(read_file, config.api_keys_file) if config.api_keys_file else None
        self._jwks = jwks
        if config.jwt is not None and self._jwks is None:
            self._jwks = JWKSCache(config.jwt.jwks_url)

    def reuse_jwks_from(self, other: Authenticator) -> None:
        """Keep the fetched signing keys across a config reload when the URL did not change."""
        if self._jwks is not None and other._jwks is not None and self._jwks.url == other._jwks.url:
            self._jwks = other._jwks

    async def authenticate(self, headers: Mapping[str, str]) -> Principal:
        """The caller behind ``headers`` (lower-case names); raises :class:`AuthError`."""
        token: str | None = None
        api_key = headers.get("x-api-key")
        authorization = headers.get("authorization")
        if authorization:
            scheme, _, value = authorization.partition(" ")
            if scheme.lower() != "bearer" or not value.strip():
                raise AuthError(401, "bad_scheme", "Authorization must be 'Bearer <credential>'")
            token = value.strip()
        if token is None and api_key is None:
            if self.config.anonymous:
                return ANONYMOUS
            raise AuthError(401, "missing_credentials", "authentication required")
        if token is not None and self.config.jwt is not None and token.count(".") == 2:
            return await self._jwt(token)
        return self._api_key(api_key if api_key is not None else token or "")

    def _api_key(self, key: str) -> Principal:
        if self._keys is None:
            raise AuthError(401, "invalid_api_key", "invalid credentials")
        entry = self._keys.lookup(key)
        if entry is None:
            raise AuthError(401, "invalid_api_key", "invalid credentials")
        return Principal(id=entry.key_id, kind="apiKey", tier=entry.tier)

    async def _jwt(self, token: str) -> Principal:
        settings = self.config.jwt
        assert settings is not None and self._jwks is not None
        try:
            header = jwt.get_unverified_header(token)
        except jwt.InvalidTokenError as exc:
            raise AuthError(401, "invalid_token", "malformed token") from exc
        kid = header.get("kid")
        if kid is not None and not isinstance(kid, str):
            raise AuthError(401, "invalid_token", "malformed token")
        key = await self._jwks.key_for(kid)
        if key is None:
            raise AuthError(401, "invalid_token", "token signed by an unknown key")
        # The token's own ``alg`` must suit the key it names: PyJWT would otherwise
        # try, say, an ECDSA verification with an RSA key and raise a TypeError.
        if header.get("alg") not in key.algorithms:
            raise AuthError(401, "invalid_token", "token algorithm does not match its key")
        options = {"require": ["exp", "iss", "aud"]}
        try:
            claims = jwt.decode(
                token,
                key.key,
                algorithms=list(key.algorithms),
                audience=settings.audiences,
                issuer=settings.issuer,
                options=options,  # type: ignore[arg-type]
                leeway=30,
            )
        except jwt.ExpiredSignatureError as exc:
            raise AuthError(401, "token_expired", "token expired") from exc
        except jwt.InvalidIssuerError as exc:
            raise AuthError(401, "wrong_issuer", "token issuer not trusted") from exc
        except jwt.InvalidAudienceError as exc:
            raise AuthError(403, "wrong_audience", "token not issued for this agent") from exc
        except jwt.InvalidTokenError as exc:
            raise AuthError(401, "invalid_token", "invalid token") from exc
        except Exception as exc:
            # Whatever else a crafted token makes the library raise is still a bad token, not a 500.
            log.warning("token rejected: %s", type(exc).__name__)
            raise AuthError(401, "invalid_token", "invalid token") from exc
        subject = str(claims.get("sub") or "")
        if not subject:
            raise AuthError(401, "invalid_token", "token has no subject")
        tier = claims.get(settings.tier_claim)
        return Principal(id=subject, kind="jwt", tier=tier if isinstance(tier, str) else None)
