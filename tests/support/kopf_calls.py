"""Calling the operator's kopf handlers from a test the way kopf does, without an operator."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Any


def as_kopf_calls(handler: Any) -> Callable[..., Any]:
    """``handler`` (an ``async def`` kopf handler or index) as a plain call with keyword arguments;
    kopf's decorators type handlers as its own protocols, so the result is typed loosely."""

    def call(**kwargs: Any) -> Any:
        return asyncio.run(handler(**kwargs))

    return call
