"""Circuit breaker per (provider, model).

closed -> open when ``failure_threshold`` failures fall within ``window``;
open -> half-open once ``cooldown`` has passed; half-open lets at most
``half_open_requests`` trial attempts through at a time: one success closes
the breaker, one failure opens it again for another cooldown.

Not thread-safe by design: one event loop owns it, and no method awaits.
"""

from __future__ import annotations

import time
from collections import deque
from collections.abc import Callable
from typing import Literal

from agent_runtime import devbus
from agent_runtime.metrics import BREAKER_STATE

State = Literal["closed", "half_open", "open"]
_GAUGE_VALUE: dict[str, int] = {"closed": 0, "half_open": 1, "open": 2}


class CircuitBreaker:
    """The breaker of one chain entry; ``clock`` is injectable for tests."""

    __slots__ = (
        "_clock",
        "_failures",
        "_gauge",
        "_name",
        "_opened_at",
        "_state",
        "_trials",
        "cooldown",
        "failure_threshold",
        "half_open_requests",
        "window",
    )

    def __init__(
        self,
        provider: str,
        model: str,
        *,
        failure_threshold: int,
        window: float,
        cooldown: float,
        half_open_requests: int,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.configure(
            failure_threshold=failure_threshold,
            window=window,
            cooldown=cooldown,
            half_open_requests=half_open_requests,
        )
        self._clock = clock
        self._failures: deque[float] = deque()
        self._state: State = "closed"
        self._opened_at = 0.0
        self._trials = 0
        self._gauge = BREAKER_STATE.labels(provider=provider, model=model)
        self._name = (provider, model)
        self._gauge.set(0)

    @property
    def state(self) -> State:
        """Current state, moving open -> half-open when the cooldown is over."""
        if self._state == "open" and self._clock() - self._opened_at >= self.cooldown:
            self._set("half_open")
            self._trials = 0
        return self._state

    def retry_in(self) -> float:
        """Seconds until an open breaker lets a trial through (0 when not open)."""
        if self.state != "open":
            return 0.0
        return max(0.0, self.cooldown - (self._clock() - self._opened_at))

    def available(self) -> bool:
        """Whether :meth:`acquire` would succeed now (for readiness; takes no slot)."""
        state = self.state
        return state == "closed" or (state == "half_open" and self._trials < self.half_open_requests)

    def acquire(self) -> bool:
        """Ask to send one attempt; a True must be followed by exactly one outcome call."""
        state = self.state
        if state == "closed":
            return True
        if state == "half_open" and self._trials < self.half_open_requests:
            self._trials += 1
            return True
        return False

    def record_success(self) -> None:
        """The attempt succeeded."""
        if self._state == "half_open":
            self._trials = max(0, self._trials - 1)
            self._failures.clear()
            self._set("closed")

    def record_failure(self) -> None:
        """The attempt failed in a way that speaks about the provider's health."""
        now = self._clock()
        if self._state == "half_open":
            self._trials = max(0, self._trials - 1)
            self._open(now)
            return
        if self._state == "open":
            return
        failures = self._failures
        failures.append(now)
        horizon = now - self.window
        while failures and failures[0] < horizon:
            failures.popleft()
        if len(failures) >= self.failure_threshold:
            self._open(now)

    def record_neutral(self) -> None:
        """The attempt ended without a verdict (cancelled, or refused for its own content)."""
        if self._state == "half_open":
            self._trials = max(0, self._trials - 1)

    def reset(self) -> None:
        """Close the breaker now and forget past failures (the provider's credential changed)."""
        self._failures.clear()
        self._trials = 0
        self._set("closed")

    def configure(
        self, *, failure_threshold: int, window: float, cooldown: float, half_open_requests: int
    ) -> None:
        """Apply new settings (hot reload) keeping the current state."""
        self.failure_threshold = failure_threshold
        self.window = window
        self.cooldown = cooldown
        self.half_open_requests = half_open_requests

    def _open(self, now: float) -> None:
        self._opened_at = now
        self._failures.clear()
        self._set("open")

    def _set(self, state: State) -> None:
        self._state = state
        self._gauge.set(_GAUGE_VALUE[state])
        bus = devbus.BUS
        if bus is not None:
            bus.publish("breaker", provider=self._name[0], model=self._name[1], state=state)
