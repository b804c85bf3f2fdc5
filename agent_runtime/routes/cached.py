"""The response cache as the routes open it: one view per request, over the call's own headers."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

from agent_runtime.cache import CacheRequest, Directives, open_request
from agent_runtime.pipeline import Call


@contextmanager
def cache_view(call: Call, body: Directives | None = None) -> Iterator[CacheRequest | None]:
    """The cache view of ``call`` while its route runs (None when the agent has no cache)."""
    state = call.state
    cache = state.cache if state is not None else None
    if cache is None:
        yield None
        return
    # The admission's headers may be a shared constant: the outcome header goes in a copy.
    call.headers = dict(call.headers)
    principal = call.principal
    owner = f"{principal.kind}:{principal.id}" if principal is not None else None
    with open_request(cache, call.ex.headers, call.headers, owner, body) as view:
        yield view
