"""The response cache: exact-match answers of an agent's chain, in memory or in Redis.

Modules: ``keys`` (what an answer is keyed on), ``entry`` (an answer's recorded events),
``backend`` / ``memory`` / ``redis`` (where entries live), ``store`` (one agent's cache: TTL,
size bound, accounting), ``request`` (one request's directives and outcome), ``llm`` (the
chain seen through the cache: replay on a hit, record on a miss). See ``docs/cache.md``.
"""

from __future__ import annotations

from agent_runtime.cache.keys import config_fingerprint
from agent_runtime.cache.llm import CachingLLM
from agent_runtime.cache.request import CACHE_HEADER, CacheRequest, Directives, open_request
from agent_runtime.cache.store import ResponseCache, build_cache

__all__ = [
    "CACHE_HEADER",
    "CacheRequest",
    "CachingLLM",
    "Directives",
    "ResponseCache",
    "build_cache",
    "config_fingerprint",
    "open_request",
]
