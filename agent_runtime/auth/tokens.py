"""Signed bearer tokens (JWT): signature against the issuer's keys, then issuer, audience, expiry."""

from __future__ import annotations

import logging
from collections.abc import Sequence
from typing import Any

from agent_runtime.auth.jwks import JWKSCache
from agent_runtime.auth.principal import AuthError

log = logging.getLogger("agent_runtime.auth")

# Clock skew tolerated between the issuer and this pod.
LEEWAY_SECONDS = 30


def looks_like_jwt(token: str) -> bool:
    """A compact JWS has three dot-separated parts; opaque tokens (and API keys) do not."""
    return token.count(".") == 2


async def verify_jwt(token: str, jwks: JWKSCache, issuer: str, audiences: Sequence[str]) -> dict[str, Any]:
    """The claims of a valid token; raises :class:`AuthError` (401, or 403 for another audience)."""
    # Here, not at the top: PyJWT loads cryptography (~10 MB), which an API-key runtime never needs.
    import jwt

    try:
        header = jwt.get_unverified_header(token)
    except jwt.InvalidTokenError as exc:
        raise AuthError(401, "invalid_token", "malformed token") from exc
    kid = header.get("kid")
    if kid is not None and not isinstance(kid, str):
        raise AuthError(401, "invalid_token", "malformed token")
    key = await jwks.key_for(kid)
    if key is None:
        raise AuthError(401, "invalid_token", "token signed by an unknown key")
    # The token's own ``alg`` must suit the key it names: PyJWT would otherwise
    # try, say, an ECDSA verification with an RSA key and raise a TypeError.
    if header.get("alg") not in key.algorithms:
        raise AuthError(401, "invalid_token", "token algorithm does not match its key")
    options = {"require": ["exp", "iss", "aud"]}
    try:
        claims: dict[str, Any] = jwt.decode(
            token,
            key.key,
            algorithms=list(key.algorithms),
            audience=list(audiences),
            issuer=issuer,
            options=options,  # type: ignore[arg-type]
            leeway=LEEWAY_SECONDS,
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
    return claims


def subject_of(claims: dict[str, Any]) -> str:
    """The token's subject; a token without one is refused."""
    subject = str(claims.get("sub") or "")
    if not subject:
        raise AuthError(401, "invalid_token", "token has no subject")
    return subject
