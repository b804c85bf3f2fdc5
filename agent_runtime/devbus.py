"""Dev mode's capture bus: what the runtime decided for each request, for `sentient dev`'s dashboard.

The pipeline, the LLM manager, the circuit breakers and the guardrails already have one
place each where a decision is counted (a metric, an audit record); in dev mode each of
those places also publishes one small event here: the caller admitted, the rate-limit
decision, a guardrail verdict, an upstream attempt (provider, model, outcome, tokens), a
retry, a failover, a breaker changing state, the end of the request. Events carry the
request id (from the logging context), so the dashboard files them under their request.

Off unless the runtime runs in dev mode (``SENTIENT_DEV=1``, set by ``sentient dev``):
:data:`BUS` is then ``None`` and every hook costs one read of a module global
(``bench/devbus.py`` measures it). On, the bus is a bounded ring buffer (old events fall
off) plus subscribers with bounded queues: a subscriber that cannot keep up is dropped
rather than let the runtime's memory grow. Nothing here is sent anywhere by itself: the
``/_dev/bus`` route (``routes/dev.py``), mounted only in dev mode, streams it to the
dashboard. Events never hold credentials; they hold prompts only through the request
events the dashboard captures itself, which is why dev mode must not be exposed.
"""

from __future__ import annotations

import asyncio
import itertools
import time
from collections import deque
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from agent_runtime.logging import REQUEST_ID

DEFAULT_CAPACITY = 2000
SUBSCRIBER_QUEUE = 1000

# The bus of this process, or None when dev mode is off (the hooks test this and nothing else).
BUS: DevBus | None = None


class DevBus:
    """A bounded ring buffer of events with live subscribers."""

    def __init__(self, capacity: int = DEFAULT_CAPACITY) -> None:
        self._ring: deque[dict[str, Any]] = deque(maxlen=capacity)
        self._seq = itertools.count(1)
        self._subscribers: set[asyncio.Queue[dict[str, Any] | None]] = set()

    def publish(self, kind: str, request_id: str | None = None, **data: Any) -> dict[str, Any]:
        """Record one event (``request_id`` defaults to the current request's) and hand it on."""
        event = {
            "seq": next(self._seq),
            "at": time.time(),
            "kind": kind,
            "request_id": request_id if request_id is not None else REQUEST_ID.get(),
            **data,
        }
        self._ring.append(event)
        for queue in list(self._subscribers):
            try:
                queue.put_nowait(event)
            except asyncio.QueueFull:
                # A stuck reader must not grow the runtime's memory: it loses its subscription.
                # It reconnects with the last sequence it saw and reads the rest from the ring.
                self._subscribers.discard(queue)
                while not queue.empty():
                    queue.get_nowait()
                queue.put_nowait(None)
        return event

    def since(self, seq: int = 0) -> list[dict[str, Any]]:
        """The buffered events after ``seq`` (oldest first)."""
        return [event for event in self._ring if event["seq"] > seq]

    @property
    def last_seq(self) -> int:
        """Sequence number of the newest buffered event (0 when empty)."""
        return self._ring[-1]["seq"] if self._ring else 0

    @contextmanager
    def subscribe(self, size: int = SUBSCRIBER_QUEUE) -> Iterator[asyncio.Queue[dict[str, Any] | None]]:
        """A queue of the events published from now on; ``None`` in it means "dropped, reconnect"."""
        queue: asyncio.Queue[dict[str, Any] | None] = asyncio.Queue(maxsize=size)
        self._subscribers.add(queue)
        try:
            yield queue
        finally:
            self._subscribers.discard(queue)


def enable(capacity: int = DEFAULT_CAPACITY) -> DevBus:
    """Turn the process's bus on (dev mode); idempotent."""
    global BUS
    if BUS is None:
        BUS = DevBus(capacity)
    return BUS


def disable() -> None:
    """Turn the bus off (tests)."""
    global BUS
    BUS = None
