"""Follows one runtime worker's capture bus (``GET /_dev/bus``) into the dashboard's hub."""

from __future__ import annotations

import asyncio
import contextlib
import json
from collections.abc import Callable

import httpx

from agent_runtime.client import LineSplitter, SSEParser
from sentient_operator.cli.devui.hub import Hub

RETRY_DELAY = 0.2


async def follow(http: httpx.AsyncClient, base_url: str, hub: Hub, alive: Callable[[], bool]) -> None:
    """Relay the worker's events until it stops (``alive()`` false); reconnect where it left off."""
    after = 0
    while alive():
        with contextlib.suppress(httpx.HTTPError):
            async with http.stream(
                "GET",
                f"{base_url}/_dev/bus",
                params={"after": after},
                timeout=httpx.Timeout(None, connect=2.0),
            ) as response:
                if response.status_code != 200:
                    return  # a runtime without dev mode (e.g. an older one): nothing to follow
                parser, splitter = SSEParser(), LineSplitter()
                async for text in response.aiter_text():
                    for line in splitter.feed(text):
                        record = parser.feed(line)
                        if record is None:
                            continue
                        with contextlib.suppress(ValueError):
                            event = json.loads(record[1])
                            after = max(after, int(event.get("seq", 0)))
                            hub.runtime_event(event)
        await asyncio.sleep(RETRY_DELAY)
