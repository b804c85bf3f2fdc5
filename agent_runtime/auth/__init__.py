"""Caller authentication and authorization.

- :mod:`.apikeys`: API keys, bound hashed;
- :mod:`.jwks`, :mod:`.tokens`: signed tokens (JWT) against the issuer's keys;
- :mod:`.oidc`: OpenID Connect discovery (JWKS URL, introspection endpoint);
- :mod:`.introspection`: opaque tokens, RFC 7662, with a short bounded cache;
- :mod:`.roles`: principals' roles and what they allow;
- :mod:`.authenticator`: the entry point the pipeline calls.
"""

from agent_runtime.auth.apikeys import APIKeyTable, hash_api_key
from agent_runtime.auth.authenticator import Authenticator, OIDCVerifier
from agent_runtime.auth.jwks import JWKSCache, SigningKey
from agent_runtime.auth.principal import ANONYMOUS, AuthError, Principal

__all__ = [
    "ANONYMOUS",
    "APIKeyTable",
    "AuthError",
    "Authenticator",
    "JWKSCache",
    "OIDCVerifier",
    "Principal",
    "SigningKey",
    "hash_api_key",
]
