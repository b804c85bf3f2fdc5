"""Load balancing inside one chain step: which member a request goes to first, and in which
order the step's other members take over when it fails.

A step of the failover chain (``llm.steps``) holds one or more members, each a (provider,
model) with its own key, breaker and retries. A step of one member is walked as before; a
step of several asks its :class:`Balancer` for an order per request:

1. the member the strategy picks, among those whose breaker lets a request through;
2. then the step's other available members, best first by the same strategy's measure
   (``weight``: higher weight first; ``leastOutstanding``: fewer in-flight requests per weight
   first; ``lowestLatency``: lower latency estimate first), ties in the order they are listed;
3. then the members whose breaker is open, in the order they are listed (they refuse at once,
   as an open entry of a plain chain does);

and only then the next step. Every strategy is deterministic (no random draw), so tests and
benchmarks repeat.

Strategies:

- ``weight``: smooth weighted round robin (nginx's): over any ``sum(weights)`` consecutive
  picks each member gets exactly its weight's share, interleaved rather than in bursts.
- ``leastOutstanding``: the member with the fewest upstream attempts in flight, divided by its
  weight; ties rotate, so an idle step still spreads.
- ``lowestLatency``: the lowest latency estimate (an exponentially weighted moving average of
  the time to the first token, or of the whole answer when not streamed, whose older samples
  lose half their weight every ``latencyHalfLife``), multiplied by (in-flight + 1) so that a
  fast member is not buried under concurrent requests. A member that was not picked for
  ``probeInterval`` gets the next request, so a slow member that recovered is seen again.

What a member's load is (:class:`MemberLoad`) belongs to the (provider, model) and outlives
config reloads, like its breaker; the strategies' own cursors restart with a new config.

No method awaits: one event loop owns every object here.
"""

from __future__ import annotations

import time
from abc import ABC, abstractmethod
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

from agent_runtime.config import BalanceStrategy
from agent_runtime.metrics import UPSTREAM_IN_FLIGHT


@dataclass(slots=True, eq=False)
class MemberLoad:
    """In-flight attempts and recent latency of one (provider, model), for the balancers."""

    provider: str
    model: str
    in_flight: int = 0
    # Latency estimate in seconds (None before the first sample) and when it was last updated.
    latency: float | None = None
    sampled_at: float = 0.0
    # When a balancer last picked this member first (None: never).
    picked_at: float | None = None
    half_life: float = 10.0
    _gauge: Any = None

    def started(self) -> None:
        """An upstream attempt on this member began."""
        self.in_flight += 1
        self._meter().inc()

    def ended(self) -> None:
        """An upstream attempt on this member ended, however it ended."""
        self.in_flight -= 1
        self._meter().dec()

    def sample(self, seconds: float, now: float) -> None:
        """Fold one latency observation into the estimate, older samples decayed by their age."""
        if self.latency is None:
            self.latency = seconds
        else:
            old = 0.5 ** (max(0.0, now - self.sampled_at) / self.half_life)
            self.latency = old * self.latency + (1.0 - old) * seconds
        self.sampled_at = now

    def _meter(self) -> Any:
        if self._gauge is None:
            self._gauge = UPSTREAM_IN_FLIGHT.labels(provider=self.provider, model=self.model)
        return self._gauge


class Balancer(ABC):
    """The strategy of one step: an order of its members for each request."""

    def __init__(self, loads: Sequence[MemberLoad], weights: Sequence[int]) -> None:
        self.loads = tuple(loads)
        self.weights = tuple(weights)

    def order(self, available: Sequence[bool]) -> list[int]:
        """Member positions in the order to try them (see the module docstring)."""
        usable = [i for i, ok in enumerate(available) if ok]
        closed_off = [i for i, ok in enumerate(available) if not ok]
        if not usable:
            return closed_off
        first = self.pick(usable)
        rest = sorted((i for i in usable if i != first), key=lambda i: (self.rank(i), i))
        return [first, *rest, *closed_off]

    @abstractmethod
    def pick(self, usable: list[int]) -> int:
        """The member the request goes to first, among ``usable`` (never empty); may move cursors."""

    @abstractmethod
    def rank(self, member: int) -> float:
        """How good a failover target ``member`` is now; lower is better. Moves nothing."""


class WeightBalancer(Balancer):
    """Smooth weighted round robin: each pick adds every usable weight to its member's credit,
    takes the member with the most credit and charges it the usable total."""

    def __init__(self, loads: Sequence[MemberLoad], weights: Sequence[int]) -> None:
        super().__init__(loads, weights)
        self._credit = [0] * len(self.weights)

    def pick(self, usable: list[int]) -> int:
        """See :class:`WeightBalancer`."""
        credit, weights = self._credit, self.weights
        total = 0
        best = usable[0]
        for i in usable:
            credit[i] += weights[i]
            total += weights[i]
            if credit[i] > credit[best]:
                best = i
        credit[best] -= total
        return best

    def rank(self, member: int) -> float:
        """Higher weight first."""
        return -self.weights[member]


class LeastOutstandingBalancer(Balancer):
    """Fewest in-flight attempts per unit of weight; ties rotate from the last pick on."""

    def __init__(self, loads: Sequence[MemberLoad], weights: Sequence[int]) -> None:
        super().__init__(loads, weights)
        self._next = 0

    def pick(self, usable: list[int]) -> int:
        """See :class:`LeastOutstandingBalancer`."""
        count = len(self.weights)
        start = self._next
        best = min(usable, key=lambda i: (self.rank(i), (i - start) % count))
        self._next = (best + 1) % count
        return best

    def rank(self, member: int) -> float:
        """In-flight attempts divided by weight."""
        return self.loads[member].in_flight / self.weights[member]


class LowestLatencyBalancer(Balancer):
    """Lowest latency estimate times (in-flight + 1), with a re-probe of members left unpicked."""

    def __init__(
        self,
        loads: Sequence[MemberLoad],
        weights: Sequence[int],
        *,
        probe_interval: float,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        super().__init__(loads, weights)
        self.probe_interval = probe_interval
        self._clock = clock

    def pick(self, usable: list[int]) -> int:
        """A member due for a probe (never picked, or not for ``probe_interval``), else the best."""
        now = self._clock()
        loads = self.loads
        due = [i for i in usable if now - _last_pick(loads[i]) >= self.probe_interval]
        if due:
            # The longest unpicked first; never picked before anything else.
            best = min(due, key=lambda i: (_last_pick(loads[i]), i))
        else:
            best = min(usable, key=lambda i: (self.rank(i), loads[i].in_flight, i))
        loads[best].picked_at = now
        return best

    def rank(self, member: int) -> float:
        """Latency estimate times (in-flight + 1); a member without a sample counts as the slowest known."""
        load = self.loads[member]
        latency = load.latency
        if latency is None:
            known = [m.latency for m in self.loads if m.latency is not None]
            latency = max(known) if known else 0.0
        return latency * (load.in_flight + 1)


def _last_pick(load: MemberLoad) -> float:
    return float("-inf") if load.picked_at is None else load.picked_at


def make_balancer(
    strategy: BalanceStrategy,
    loads: Sequence[MemberLoad],
    weights: Sequence[int],
    *,
    probe_interval: float,
    clock: Callable[[], float] = time.monotonic,
) -> Balancer:
    """The balancer of one step for ``strategy``."""
    if strategy == "leastOutstanding":
        return LeastOutstandingBalancer(loads, weights)
    if strategy == "lowestLatency":
        return LowestLatencyBalancer(loads, weights, probe_interval=probe_interval, clock=clock)
    return WeightBalancer(loads, weights)
