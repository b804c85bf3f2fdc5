"""The one entry point: credentials from request headers to a :class:`Principal`.

API keys arrive as ``Authorization: Bearer <key>`` or ``X-API-Key: <key>``. A bearer token with
three dot-separated parts is a JWT when ``jwt`` or ``oidc`` is configured; any other bearer value
is an opaque OAuth2 access token when ``oidc.introspection`` is configured and not an API key.

Statuses: 401 when no acceptable credential is presented (missing, unknown key, bad signature,
expired, untrusted issuer, inactive token); 403 when a genuine token is presented that was issued
for another audience; 503 when the issuer cannot be asked about an opaque token.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import httpx

from agent_runtime.auth.apikeys import APIKeyTable, ReadFile
from agent_runtime.auth.introspection import Introspector
from agent_runtime.auth.jwks import JWKSCache
from agent_runtime.auth.oidc import Discovery
from agent_runtime.auth.principal import ANONYMOUS, AuthError, Principal
from agent_runtime.auth.roles import Roles
from agent_runtime.auth.tokens import looks_like_jwt, subject_of, verify_jwt
from agent_runtime.config import AuthRuntimeConfig, OIDCConfig, duration_seconds


class OIDCVerifier:
    """Tokens of one OIDC issuer: keys and introspection endpoint found through discovery."""

    def __init__(self, config: OIDCConfig, read_file: ReadFile) -> None:
        self.config = config
        # One pooled client for discovery, keys and introspection (connections to one issuer).
        self._client = httpx.AsyncClient(timeout=5.0)
        self.discovery = Discovery(config.issuer, self._client)
        jwks_url: Any = config.jwks_url or self.discovery.jwks_uri
        self.jwks = JWKSCache(
            jwks_url,
            self._client,
            ttl=duration_seconds(config.jwks_ttl),
            min_refresh=duration_seconds(config.jwks_min_refresh),
        )
        self.introspector: Introspector | None = None
        if config.introspection is not None:
            self.introspector = Introspector(
                config.introspection,
                config.issuer,
                config.audiences,
                read_file,
                self._client,
                self._introspection_endpoint,
            )

    async def _introspection_endpoint(self) -> str:
        assert self.config.introspection is not None
        return self.config.introspection.endpoint or await self.discovery.endpoint("introspection_endpoint")

    async def claims(self, token: str) -> tuple[str, dict[str, Any]]:
        """``(kind, claims)`` of a valid token; raises :class:`AuthError`."""
        if looks_like_jwt(token):
            return "jwt", await verify_jwt(token, self.jwks, self.config.issuer, self.config.audiences)
        if self.introspector is None:
            raise AuthError(401, "invalid_token", "invalid token")
        return "introspected", await self.introspector.claims(token)

    async def aclose(self) -> None:
        """Close the pooled connections."""
        await self._client.aclose()


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
        self._jwks_url = config.jwt.jwks_url if config.jwt is not None else None
        self._oidc = OIDCVerifier(config.oidc, read_file) if config.oidc is not None else None
        self.roles = Roles(config.authorization) if config.authorization is not None else None

    def reuse_jwks_from(self, other: Authenticator) -> None:
        """Keep fetched keys, discovery and cached introspection answers across a reload when unchanged."""
        if self._jwks is not None and other._jwks is not None and self._jwks_url == other._jwks_url:
            self._jwks = other._jwks
        if self._oidc is not None and other._oidc is not None and self._oidc.config == other._oidc.config:
            self._oidc = other._oidc

    @property
    def oidc(self) -> OIDCVerifier | None:
        """The OIDC verifier, when configured."""
        return self._oidc

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
        if token is not None:
            # A JWT-shaped bearer wins over X-API-Key (as before OIDC); an opaque bearer is an
            # access token only when it is not an API key and no X-API-Key came with it.
            if looks_like_jwt(token) and self.config.jwt is not None:
                return await self._jwt(token)
            if self._oidc is not None and (
                looks_like_jwt(token) or (api_key is None and not self._is_api_key(token))
            ):
                return await self._oidc_token(token)
        return self._api_key(api_key if api_key is not None else token or "")

    def _is_api_key(self, key: str) -> bool:
        return self._keys is not None and self._keys.lookup(key) is not None

    def _api_key(self, key: str) -> Principal:
        if self._keys is None:
            raise AuthError(401, "invalid_api_key", "invalid credentials")
        entry = self._keys.lookup(key)
        if entry is None:
            raise AuthError(401, "invalid_api_key", "invalid credentials")
        roles = self.roles.for_api_key(entry.key_id) if self.roles is not None else ()
        return Principal(id=entry.key_id, kind="apiKey", tier=entry.tier, roles=roles)

    def _principal(self, kind: str, subject: str, claims: dict[str, Any], tier_claim: str) -> Principal:
        tier = claims.get(tier_claim)
        roles = self.roles.for_claims(claims) if self.roles is not None else ()
        return Principal(id=subject, kind=kind, tier=tier if isinstance(tier, str) else None, roles=roles)

    async def _jwt(self, token: str) -> Principal:
        settings = self.config.jwt
        assert settings is not None and self._jwks is not None
        try:
            claims = await verify_jwt(token, self._jwks, settings.issuer, settings.audiences)
        except AuthError:
            # A token of the OIDC issuer (another issuer than ``jwt``'s) is still welcome.
            if self._oidc is None:
                raise
            return await self._oidc_token(token)
        return self._principal("jwt", subject_of(claims), claims, settings.tier_claim)

    async def _oidc_token(self, token: str) -> Principal:
        assert self._oidc is not None
        kind, claims = await self._oidc.claims(token)
        subject = claims.get("sub") or claims.get("client_id")
        if not isinstance(subject, str) or not subject:
            raise AuthError(401, "invalid_token", "token has no subject")
        return self._principal(kind, subject, claims, self._oidc.config.tier_claim)

    def authorize(self, principal: Principal, path: str, model: str | None) -> Principal:
        """The principal acting under a role allowing ``path`` and ``model``; unchanged without roles."""
        if self.roles is None:
            return principal
        return self.roles.authorize(principal, path, model)
