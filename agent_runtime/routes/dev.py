"""``GET /_dev/bus``: the dev-mode capture bus (``agent_runtime.devbus``) as server-sent events.

Mounted only when the runtime runs in dev mode (``SENTIENT_DEV=1``, set by ``sentient
dev`` for its workers); a production runtime answers 404 here. It is read by ``sentient
dev``'s proxy, which files the events under their requests for the dashboard.

Served outside the request pipeline on purpose: the reader is not a caller, and a request
measured and published on the bus for every read of the bus would feed itself.
``?after=SEQ`` resumes after the last event seen (what the ring buffer still holds).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
from collections.abc import AsyncIterator
from typing import Any
from urllib.parse import parse_qs

from agent_runtime.devbus import DevBus
from agent_runtime.http import Receive, Scope, Send

PATH = "/_dev/bus"
HEARTBEAT = 10.0


def _after(scope: Scope) -> int:
    values = parse_qs(scope.get("query_string", b"").decode("latin-1")).get("after", ["0"])
    try:
        return max(0, int(values[0]))
    except ValueError:
        return 0


def _frame(event: dict[str, Any]) -> bytes:
    return f"id: {event['seq']}\ndata: {json.dumps(event, separators=(',', ':'), default=str)}\n\n".encode()


async def watch_disconnect(receive: Receive, gone: asyncio.Event) -> None:
    """Set ``gone`` when the client disconnects (run it as a task beside a stream)."""
    while (await receive())["type"] != "http.disconnect":
        pass
    gone.set()


async def live_events(
    queue: asyncio.Queue[dict[str, Any] | None], gone: asyncio.Event, heartbeat: float = HEARTBEAT
) -> AsyncIterator[dict[str, Any] | None]:
    """A subscription's events as they come, ``None`` after each quiet ``heartbeat``.

    Ends when the client is gone or the subscription was dropped for falling behind.
    """
    while not gone.is_set():
        getter = asyncio.ensure_future(queue.get())
        stop = asyncio.ensure_future(gone.wait())
        done, _ = await asyncio.wait({getter, stop}, timeout=heartbeat, return_when=asyncio.FIRST_COMPLETED)
        stop.cancel()
        if getter not in done:
            getter.cancel()
            if not gone.is_set():
                yield None
            continue
        event = getter.result()
        if event is None:
            return
        yield event


async def serve(bus: DevBus, scope: Scope, receive: Receive, send: Send) -> None:
    """Stream the buffered events after ``?after=`` then the live ones, until the reader leaves."""
    await send(
        {
            "type": "http.response.start",
            "status": 200,
            "headers": [(b"content-type", b"text/event-stream"), (b"cache-control", b"no-cache")],
        }
    )
    gone = asyncio.Event()
    watcher = asyncio.ensure_future(watch_disconnect(receive, gone))
    last = _after(scope)
    try:
        # Subscribed before reading the ring, so that nothing published in between is lost.
        with bus.subscribe() as queue:
            for event in bus.since(last):
                await send({"type": "http.response.body", "body": _frame(event), "more_body": True})
                last = event["seq"]
            async for item in live_events(queue, gone):
                if item is None:
                    await send({"type": "http.response.body", "body": b": ping\n\n", "more_body": True})
                elif item["seq"] > last:
                    await send({"type": "http.response.body", "body": _frame(item), "more_body": True})
                    last = item["seq"]
        # Dropped for falling behind (the reader resumes with ?after=) or the reader left.
        with contextlib.suppress(Exception):
            await send({"type": "http.response.body", "body": b"", "more_body": False})
    finally:
        watcher.cancel()
