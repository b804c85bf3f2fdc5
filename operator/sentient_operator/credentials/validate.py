"""Trying a credential against its provider with one cheap authenticated call.

Used before a rotated key is bound (``rotation.validateBeforeRollout``): the models list costs
no tokens and answers 401/403 for a wrong key. Only a clear refusal counts as ``Unauthorized``;
anything else (timeouts, 5xx, an endpoint without a models route) is ``Unreachable`` or
``Inconclusive``, and the caller decides whether to bind anyway.
"""

from __future__ import annotations

import ssl
from collections.abc import Mapping
from dataclasses import dataclass
from enum import StrEnum

import httpx

from ..api.v1alpha1 import ProviderType

DEFAULT_ENDPOINTS: dict[str, str] = {
    ProviderType.OPENAI.value: "https://api.openai.com/v1",
    ProviderType.ANTHROPIC.value: "https://api.anthropic.com",
}
ANTHROPIC_VERSION = "2023-06-01"

#: Condition type and reasons for the agent's ``CredentialsValid`` condition.
CREDENTIALS_VALID = "CredentialsValid"


class Validity(StrEnum):
    """Outcome of a validation call (also the condition reason)."""

    VALID = "Valid"
    UNAUTHORIZED = "Unauthorized"
    UNREACHABLE = "Unreachable"
    INCONCLUSIVE = "Inconclusive"


@dataclass(frozen=True)
class ValidationResult:
    """What the provider said; ``message`` names the status code, never the key."""

    validity: Validity
    message: str
    status_code: int | None = None

    @property
    def ok(self) -> bool:
        """The provider accepted the key."""
        return self.validity is Validity.VALID

    @property
    def rejected(self) -> bool:
        """The provider clearly refused the key (401/403): do not bind it."""
        return self.validity is Validity.UNAUTHORIZED


def models_url(provider_type: str, endpoint: str | None) -> str:
    """The models-list URL for a provider type and base URL (as the runtime uses it).

    OpenAI-style base URLs include ``/v1`` (``https://api.openai.com/v1``); Anthropic's does not.
    """
    base = (endpoint or DEFAULT_ENDPOINTS.get(provider_type, "")).rstrip("/")
    if not base:
        raise ValueError(f"provider type {provider_type} needs an endpoint")
    if provider_type == ProviderType.ANTHROPIC.value and not base.endswith("/v1"):
        return f"{base}/v1/models"
    return f"{base}/models"


def auth_headers(provider_type: str, api_key: str) -> dict[str, str]:
    """The authentication headers the provider expects."""
    if provider_type == ProviderType.ANTHROPIC.value:
        return {"x-api-key": api_key, "anthropic-version": ANTHROPIC_VERSION}
    return {"Authorization": f"Bearer {api_key}"}


def _verify(ca_pem: str | None, insecure: bool) -> ssl.SSLContext | bool:
    if insecure:
        return False
    if not ca_pem:
        return True
    # ssl wants a file or cadata; cadata keeps the bundle in memory.
    ctx = ssl.create_default_context()
    ctx.load_verify_locations(cadata=ca_pem)
    return ctx


async def validate_key(
    provider_type: str,
    endpoint: str | None,
    api_key: str,
    *,
    ca_pem: str | None = None,
    insecure_skip_verify: bool = False,
    extra_headers: Mapping[str, str] | None = None,
    request_timeout: float = 5.0,
) -> ValidationResult:
    """GET the provider's models list with ``api_key``; never raises, never echoes the key."""
    try:
        url = models_url(str(provider_type), endpoint)
        verify = _verify(ca_pem, insecure_skip_verify)
    except (ValueError, ssl.SSLError) as exc:
        return ValidationResult(Validity.INCONCLUSIVE, f"cannot build the request ({type(exc).__name__})")
    headers = dict(extra_headers or {})
    headers.update(auth_headers(str(provider_type), api_key))
    try:
        async with httpx.AsyncClient(
            verify=verify, timeout=request_timeout, follow_redirects=False
        ) as client:
            resp = await client.get(url, headers=headers)
    except httpx.TimeoutException:
        return ValidationResult(Validity.UNREACHABLE, "the provider did not answer in time")
    except httpx.HTTPError as exc:
        return ValidationResult(Validity.UNREACHABLE, f"cannot reach the provider ({type(exc).__name__})")
    code = resp.status_code
    if 200 <= code < 300:
        return ValidationResult(Validity.VALID, f"the provider accepted the key (HTTP {code})", code)
    if code in (401, 403):
        return ValidationResult(Validity.UNAUTHORIZED, f"the provider rejected the key (HTTP {code})", code)
    if code == 429 or code >= 500:
        return ValidationResult(
            Validity.UNREACHABLE, f"the provider is not answering normally (HTTP {code})", code
        )
    return ValidationResult(Validity.INCONCLUSIVE, f"the models list answered HTTP {code}", code)
