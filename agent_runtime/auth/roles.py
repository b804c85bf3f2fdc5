"""Authorization: which roles a principal holds, and whether one of them allows a request.

Roles are declared on the agent itself (``auth.authorization.roles``): they are granted to API
key IDs and to token claim values, and say which routes and models they allow and at which
rate-limit tier. A caller holding no role that allows the request is refused with 403 and a
reason; the first role (in declaration order) that allows it gives the tier.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from typing import Any

from agent_runtime.auth.principal import AuthError, Principal
from agent_runtime.config import AUTH_ROUTES, AuthorizationConfig, RoleConfig


def claim_values(claims: Mapping[str, Any], path: str) -> frozenset[str]:
    """The string values of a claim: a list's strings, a string split on spaces (OAuth2 ``scope``;
    ``scp`` when a token has no ``scope``).

    A dotted ``path`` reaches into nested objects (``realm_access.roles``) when no claim carries
    the whole dotted name.
    """
    value: Any = claims.get(path)
    if value is None and path == "scope":
        # Signed access tokens often carry the scopes as a list named ``scp`` (Hydra, Okta, Azure AD).
        value = claims.get("scp")
    if value is None and "." in path:
        value = claims
        for part in path.split("."):
            value = value.get(part) if isinstance(value, Mapping) else None
    if isinstance(value, str):
        return frozenset(value.split())
    if isinstance(value, list):
        return frozenset(v for v in value if isinstance(v, str))
    return frozenset()


class Roles:
    """The roles of one agent, with the grants indexed for the hot path."""

    def __init__(self, config: AuthorizationConfig) -> None:
        self._roles: dict[str, RoleConfig] = {r.name: r for r in config.roles}
        self._order = [r.name for r in config.roles]
        self._by_key: dict[str, tuple[str, ...]] = {}
        for role in config.roles:
            for key_id in role.api_keys:
                self._by_key[key_id] = (*self._by_key.get(key_id, ()), role.name)
        self._claims = sorted({g.claim for r in config.roles for g in r.claims})
        self._routes = {r.name: frozenset(r.routes) for r in config.roles}
        self._models = {r.name: frozenset(r.models) for r in config.roles}

    def for_api_key(self, key_id: str) -> tuple[str, ...]:
        """Roles granted to an API key ID."""
        return self._by_key.get(key_id, ())

    def for_claims(self, claims: Mapping[str, Any]) -> tuple[str, ...]:
        """Roles granted by a token's claims, in declaration order."""
        held = {claim: claim_values(claims, claim) for claim in self._claims}
        return tuple(
            name for name in self._order if any(g.value in held[g.claim] for g in self._roles[name].claims)
        )

    def authorize(self, principal: Principal, path: str, model: str | None) -> Principal:
        """The principal acting under its first role allowing the request; raises :class:`AuthError` (403)."""
        if not principal.roles:
            raise AuthError(403, "no_role", "forbidden: the caller holds no role on this agent")
        route = AUTH_ROUTES.get(path)
        allowed_route = [
            name for name in principal.roles if not self._routes[name] or route in self._routes[name]
        ]
        if not allowed_route:
            raise AuthError(
                403, "route_not_allowed", f"forbidden: no role of the caller allows {route or path}"
            )
        for name in allowed_route:
            models = self._models[name]
            if model is None or not models or model in models:
                tier = self._roles[name].tier
                return principal if tier is None else dataclasses.replace(principal, tier=tier)
        raise AuthError(403, "model_not_allowed", "forbidden: no role of the caller allows this model")
