"""OpenID Connect discovery: the issuer's ``/.well-known/openid-configuration``.

The document gives the JWKS URL and the introspection endpoint, so that neither has to be
copied by hand. It is fetched when first needed and kept for an hour; a failed fetch is
retried no more often than every few seconds (callers get a 401 meanwhile, not a hang).
"""

from __future__ import annotations

import asyncio
import logging
import time
from typing import Any

import httpx

log = logging.getLogger("agent_runtime.auth")

DISCOVERY_PATH = "/.well-known/openid-configuration"
DISCOVERY_TTL_SECONDS = 3600.0
DISCOVERY_RETRY_SECONDS = 5.0
# A discovery document is a few kilobytes; anything much larger is not one.
MAX_DOCUMENT_BYTES = 1 << 20


class DiscoveryError(Exception):
    """The discovery document could not be had, or does not say what is needed."""


def discovery_url(issuer: str) -> str:
    """Where an issuer publishes its discovery document (OpenID Connect Discovery 1.0, section 4)."""
    return issuer.rstrip("/") + DISCOVERY_PATH


class Discovery:
    """The discovery document of one issuer, fetched lazily and cached."""

    def __init__(self, issuer: str, client: httpx.AsyncClient) -> None:
        self.issuer = issuer
        self._client = client
        self._document: dict[str, Any] | None = None
        self._fetched_at = -float("inf")
        self._failed_at = -float("inf")
        self._lock = asyncio.Lock()

    async def document(self) -> dict[str, Any]:
        """The document (cached); raises :class:`DiscoveryError`."""
        now = time.monotonic()
        if self._document is not None and now - self._fetched_at < DISCOVERY_TTL_SECONDS:
            return self._document
        async with self._lock:
            if self._document is not None and time.monotonic() - self._fetched_at < DISCOVERY_TTL_SECONDS:
                return self._document
            if time.monotonic() - self._failed_at < DISCOVERY_RETRY_SECONDS and self._document is None:
                raise DiscoveryError("discovery failed recently")
            try:
                self._document = await self._fetch()
                self._fetched_at = time.monotonic()
            except DiscoveryError:
                self._failed_at = time.monotonic()
                if self._document is None:
                    raise
                # Keep the document we had: an issuer outage must not stop token checks.
                self._fetched_at = time.monotonic() - DISCOVERY_TTL_SECONDS + DISCOVERY_RETRY_SECONDS
        return self._document

    async def _fetch(self) -> dict[str, Any]:
        url = discovery_url(self.issuer)
        try:
            response = await self._client.get(url)
            response.raise_for_status()
            if len(response.content) > MAX_DOCUMENT_BYTES:
                raise DiscoveryError("discovery document too large")
            document = response.json()
        except (httpx.HTTPError, ValueError) as exc:
            log.warning("OIDC discovery from %s failed: %s", url, type(exc).__name__)
            raise DiscoveryError(f"discovery failed: {type(exc).__name__}") from exc
        if not isinstance(document, dict):
            raise DiscoveryError("discovery document is not an object")
        # OpenID Connect Discovery 1.0, 4.3: the document's issuer must be the one asked for.
        if document.get("issuer") != self.issuer:
            log.warning("OIDC discovery from %s names another issuer; ignored", url)
            raise DiscoveryError("discovery document names another issuer")
        return document

    async def endpoint(self, name: str) -> str:
        """One URL of the document (``jwks_uri``, ``introspection_endpoint``); raises :class:`DiscoveryError`."""
        value = (await self.document()).get(name)
        if not isinstance(value, str) or not value.startswith(("https://", "http://")):
            raise DiscoveryError(f"discovery document has no {name}")
        return value

    async def jwks_uri(self) -> str:
        """The issuer's JWKS URL."""
        return await self.endpoint("jwks_uri")
