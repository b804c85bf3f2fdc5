"""One request's view of the response cache: may it read, may it store, what happened.

The route opens a :class:`CacheRequest` before it runs (:func:`open_request`), which puts it in
a context variable that the agent's work task inherits; :class:`~agent_runtime.cache.llm.CachingLLM`
reads it on every chain call. What a miss produced waits in :attr:`CacheRequest.pending` until
the route says the answer went out whole (:meth:`CacheRequest.commit`): an error, a guardrail
block, a cut-off stream or a client that left never reaches the cache.

Caller directives (both optional, both honoured on every route):

- ``Cache-Control: no-cache`` (request header): do not answer from the cache (a fresh answer is
  still stored); ``no-store``: do not store this answer; both: the cache is not used at all;
- the OpenAI body extension ``"cache": {"no-cache": true, "no-store": true}`` (the shape
  LiteLLM uses) says the same on ``/v1/chat/completions``.
"""

from __future__ import annotations

import contextvars
import logging
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass, field

from agent_runtime import metrics
from agent_runtime.cache.entry import Entry
from agent_runtime.cache.store import ResponseCache

log = logging.getLogger("agent_runtime.cache")

# The response header saying how the cache served the request: hit, miss or bypass.
CACHE_HEADER = "x-sentient-cache"


@dataclass(frozen=True, slots=True)
class Directives:
    """What the caller asked of the cache."""

    no_cache: bool = False
    no_store: bool = False

    @classmethod
    def from_headers(cls, headers: Mapping[str, str]) -> Directives:
        """``Cache-Control`` (and the HTTP/1.0 ``Pragma: no-cache``) of a request."""
        tokens = {t.strip().lower() for t in headers.get("cache-control", "").split(",")}
        pragma = headers.get("pragma", "").strip().lower() == "no-cache"
        return cls(no_cache="no-cache" in tokens or pragma, no_store="no-store" in tokens)

    def __or__(self, other: Directives) -> Directives:
        return Directives(self.no_cache or other.no_cache, self.no_store or other.no_store)


@dataclass(slots=True)
class CacheRequest:
    """The cache settings and outcome of one request."""

    cache: ResponseCache
    # Empty when entries are shared per agent; the caller's principal otherwise.
    scope: str
    read: bool
    write: bool
    # The response headers of the request (the route's own dict): the outcome goes in them.
    headers: dict[str, str]
    pending: list[tuple[str, Entry]] = field(default_factory=list)
    saved_tokens: int = 0
    hits: int = 0
    # Chain calls that went upstream (misses and bypasses).
    fresh: int = 0

    def mark(self, outcome: str) -> None:
        """Say ``outcome`` in the response header (the last chain call decides)."""
        self.headers[CACHE_HEADER] = outcome

    def charged(self, tokens: int | None) -> int | None:
        """Tokens to settle the rate-limit budget with: the request counts, cached tokens do not."""
        if not self.hits:
            return tokens
        if tokens is None:
            # Usage unknown (a client that left): only upstream calls may have spent any.
            return None if self.fresh else 0
        return max(0, tokens - self.saved_tokens)

    async def commit(self) -> None:
        """The answer went out whole: store what the misses produced."""
        pending, self.pending = self.pending, []
        for digest, entry in pending:
            await self.cache.store(digest, entry)


CURRENT: contextvars.ContextVar[CacheRequest | None] = contextvars.ContextVar("sentient_cache", default=None)


@contextmanager
def open_request(
    cache: ResponseCache | None,
    request_headers: Mapping[str, str],
    response_headers: dict[str, str],
    principal: str | None,
    body: Directives | None = None,
) -> Iterator[CacheRequest | None]:
    """The request's cache view while the route runs; None when the agent has no cache.

    ``response_headers`` is the route's own dict (not a shared one): the outcome header is
    written into it before the first byte of the answer.
    """
    if cache is None:
        yield None
        return
    directives = Directives.from_headers(request_headers)
    if body is not None:
        directives |= body
    scope = (principal or "") if cache.per_principal else ""
    request = CacheRequest(
        cache, scope, read=not directives.no_cache, write=not directives.no_store, headers=response_headers
    )
    if not request.read:
        metrics.CACHE_LOOKUPS.labels(result="bypass").inc()
        request.mark("bypass")
    token = CURRENT.set(request)
    try:
        yield request
    finally:
        CURRENT.reset(token)


async def commit_cached() -> None:
    """The route's answer went out whole: the request's misses (if any) are stored."""
    view = CURRENT.get()
    if view is not None:
        await view.commit()
