"""The external moderation check: an OpenAI-compatible ``POST {endpoint}/moderations``.

The service answers ``{"results": [{"flagged": bool, "categories": {...},
"category_scores": {...}}]}``, one result per input. The check fires on a flagged
result (or, with ``categories`` / ``threshold`` set, on those categories or scores).
A call that fails or runs over ``timeout`` follows ``onError``: ``failOpen`` lets the
text through (counted and audited as an error), ``failClosed`` blocks it.
"""

from __future__ import annotations

import logging
import ssl
from collections.abc import Callable, Sequence
from typing import Any

import httpx

from agent_runtime.config import GuardrailAction, ModerationCheck, ModerationService, duration_seconds
from agent_runtime.guardrails.base import Check, Finding

log = logging.getLogger("agent_runtime.guardrails")

ReadFile = Callable[[str], str | None]


class ModerationUnavailable(Exception):
    """The moderation service failed or did not answer in time (the reason is a short word)."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


class ModerationClient:
    """One pooled HTTP client to the moderation service, shared by every moderation check."""

    def __init__(self, service: ModerationService, read_file: ReadFile) -> None:
        self.service = service
        self._read = read_file
        self.url = service.endpoint.rstrip("/") + "/moderations"
        self.timeout = duration_seconds(service.timeout)
        self.fail_closed = service.on_error == "failClosed"
        verify: ssl.SSLContext | bool = not service.tls.insecure_skip_verify
        if verify and service.tls.ca_file:
            context = ssl.create_default_context(cadata=read_file(service.tls.ca_file) or None)
            verify = context
        self._client = httpx.AsyncClient(verify=verify, timeout=self.timeout)

    async def moderate(self, texts: Sequence[str]) -> list[dict[str, Any]]:
        """The results, one per text; raises :class:`ModerationUnavailable`."""
        headers = {}
        key = self._read(self.service.credential_file) if self.service.credential_file else None
        if key:
            headers["authorization"] = f"Bearer {key}"
        body: dict[str, Any] = {"input": list(texts)}
        if self.service.model:
            body["model"] = self.service.model
        try:
            response = await self._client.post(self.url, json=body, headers=headers)
        except httpx.TimeoutException:
            raise ModerationUnavailable("timeout") from None
        except httpx.HTTPError:
            raise ModerationUnavailable("unreachable") from None
        if response.status_code != 200:
            raise ModerationUnavailable(f"status_{response.status_code // 100}xx")
        try:
            results = response.json()["results"]
            if not isinstance(results, list):
                raise TypeError
        except (ValueError, KeyError, TypeError):
            raise ModerationUnavailable("bad_answer") from None
        return [r for r in results if isinstance(r, dict)]

    async def aclose(self) -> None:
        """Close the connections."""
        await self._client.aclose()


class Moderation(Check):
    """Fires on what the moderation service flags."""

    kind = "moderation"
    remote = True

    def __init__(
        self, name: str, action: GuardrailAction, config: ModerationCheck, client: ModerationClient
    ) -> None:
        super().__init__(name, action)
        self.categories = frozenset(config.categories)
        self.threshold = config.threshold
        self.client = client

    def scan(self, texts: Sequence[str]) -> Finding | None:  # pragma: no cover - remote checks are awaited
        """Remote checks are awaited through :meth:`ascan`."""
        raise NotImplementedError("the moderation check is remote: use ascan")

    def _flagged(self, result: dict[str, Any]) -> set[str]:
        categories = result.get("categories") or {}
        scores = result.get("category_scores") or {}
        names = self.categories or set(categories) | set(scores)
        if self.threshold is not None:
            return {n for n in names if float(scores.get(n) or 0.0) >= self.threshold}
        flagged = {n for n in names if categories.get(n) is True}
        if not flagged and not self.categories and result.get("flagged") is True:
            flagged = {"flagged"}
        return flagged

    async def ascan(self, texts: Sequence[str]) -> Finding | None:
        """Categories the service flags (their names only: they come from the service's fixed set)."""
        texts = [t for t in texts if t]
        if not texts:
            return None
        flagged: set[str] = set()
        top = 0.0
        for result in await self.client.moderate(texts):
            found = self._flagged(result)
            flagged |= found
            scores = result.get("category_scores") or {}
            top = max([top, *(float(scores.get(n) or 0.0) for n in found)])
        if not flagged:
            return None
        # Category names are bounded (a short word each, at most 32): safe in the audit log.
        labels = tuple(sorted(c[:64] for c in flagged))[:32]
        return Finding(labels, score=round(top, 4) if top else None)
