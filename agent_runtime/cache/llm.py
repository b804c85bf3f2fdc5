"""The chain seen through the response cache: a hit replays a recorded answer, a miss records one.

:class:`CachingLLM` has the two calls the routes and agents make on the LLM manager
(``complete`` and ``stream``) and passes everything else through. Outside a request that opened
the cache (:data:`~agent_runtime.cache.request.CURRENT` unset) it is the manager itself.

A replayed stream yields the recorded events in their order (text pieces, usage, ``Completed``),
so the routes write the same Sentient events and OpenAI chunks as for the original answer; only
the ids and timestamps that every response gets afresh differ.
"""

from __future__ import annotations

import contextlib
from collections.abc import AsyncGenerator
from typing import Any

from agent_runtime import metrics
from agent_runtime.cache.entry import Entry, StreamRecording
from agent_runtime.cache.keys import request_digest
from agent_runtime.cache.request import CURRENT, CacheRequest
from agent_runtime.llm import ChatRequest, Completion, LLMEvent

_HITS = metrics.CACHE_LOOKUPS.labels(result="hit")
_MISSES = metrics.CACHE_LOOKUPS.labels(result="miss")


class CachingLLM:
    """``llm`` (an :class:`~agent_runtime.llm.LLMManager`) behind the cache of one config snapshot."""

    def __init__(self, llm: Any, fingerprint: str) -> None:
        self.llm = llm
        self.fingerprint = fingerprint

    def __getattr__(self, name: str) -> Any:
        # Everything but the two calls (usable(), reload(), ...) is the manager's own.
        return getattr(self.llm, name)

    def _digest(self, request: ChatRequest, mode: str, cached: CacheRequest) -> str:
        return request_digest(self.fingerprint, request, mode, cached.scope)

    async def _lookup(self, digest: str, cached: CacheRequest) -> Entry | None:
        if not cached.read:
            return None
        entry = await cached.cache.lookup(digest)
        if entry is None:
            _MISSES.inc()
            cached.mark("miss")
            return None
        _HITS.inc()
        metrics.CACHE_SAVED_TOKENS.inc(entry.tokens)
        cached.hits += 1
        cached.saved_tokens += entry.tokens
        cached.mark("hit")
        return entry

    async def complete(self, request: ChatRequest, **options: Any) -> Completion:
        """A whole answer: from the cache, or from the chain (then recorded)."""
        cached = CURRENT.get()
        if cached is None:
            completion: Completion = await self.llm.complete(request, **options)
            return completion
        digest = self._digest(request, "complete", cached)
        entry = await self._lookup(digest, cached)
        if entry is not None:
            return entry.completion()
        cached.fresh += 1
        completion = await self.llm.complete(request, **options)
        if cached.write:
            cached.pending.append((digest, Entry.from_completion(completion)))
        return completion

    def stream(self, request: ChatRequest, **options: Any) -> AsyncGenerator[LLMEvent, None]:
        """The answer as events: replayed from the cache, or the chain's own (then recorded)."""
        cached = CURRENT.get()
        if cached is None:
            events: AsyncGenerator[LLMEvent, None] = self.llm.stream(request, **options)
            return events
        return self._stream(request, options, cached)

    async def _stream(
        self, request: ChatRequest, options: dict[str, Any], cached: CacheRequest
    ) -> AsyncGenerator[LLMEvent, None]:
        digest = self._digest(request, "stream", cached)
        entry = await self._lookup(digest, cached)
        if entry is not None:
            for event in entry.events():
                yield event
            return
        cached.fresh += 1
        recording = StreamRecording() if cached.write else None
        async with contextlib.aclosing(self.llm.stream(request, **options)) as events:
            async for event in events:
                if recording is not None:
                    recording.add(event)
                yield event
        # Reached only when the chain's stream ended by itself: a consumer that stopped early
        # closed this generator at its yield, and an LLMError went up through the loop.
        if recording is not None:
            recorded = recording.entry()
            if recorded is not None:
                cached.pending.append((digest, recorded))
