"""Where spend totals live: process memory, or Redis shared by every replica.

A request counts against windows: for each budget subject (a budget and whom it
counts, e.g. one API key) its UTC day and/or UTC month, each a total in micro-units
under its own key; a set of leases holds the reservations in flight. ``reserve`` checks
every window's cost against its limit and charges all of them only if each fits;
``settle`` gives the unused parts back to the same windows, once. The Redis store does
both in one atomic script each (``spend_reserve.lua``, ``spend_settle.lua``); the memory
store mirrors them operation for operation and is exact for one process only.

All the spend keys of one policy share a Redis Cluster hash tag, so each script touches
one slot and all budgets of a request are checked and charged atomically.
"""

from __future__ import annotations

from collections import OrderedDict
from dataclasses import dataclass, field
from importlib import resources
from typing import TYPE_CHECKING, Protocol

from agent_runtime.limits.base import DEFAULT_LEASE_US

if TYPE_CHECKING:
    from agent_runtime.limits.redis import ResilientRedisBackend

RESERVE_LUA = resources.files("agent_runtime.limits").joinpath("spend_reserve.lua").read_text()
SETTLE_LUA = resources.files("agent_runtime.limits").joinpath("spend_settle.lua").read_text()

# Code of a refusal because the shared store is unreachable under failClosed.
UNAVAILABLE = -1


@dataclass(frozen=True, slots=True)
class Window:
    """One counted window of a subject: its storage key, limit and this request's cost
    (micro-units), and the key's lifetime."""

    key: str
    limit: int
    ttl_ms: int
    cost: int


@dataclass(slots=True)
class SpendResult:
    """What a reservation found: ``refused`` is 0, the 1-based window that refused, or ``UNAVAILABLE``.

    ``spent`` holds each window's total after the operation; ``store`` is the store that must
    settle this reservation (the local fallback when Redis was unreachable).
    """

    refused: int
    spent: list[int]
    store: SpendStore | None = field(default=None, repr=False)

    @property
    def allowed(self) -> bool:
        """True when the cost was charged."""
        return self.refused == 0


class SpendStore(Protocol):
    """Spend totals with the reservation arithmetic (memory, Redis)."""

    async def reserve(self, leases: str, windows: list[Window], request_id: str, now_us: int) -> SpendResult:
        """Charge every window its cost if each stays within its limit."""
        ...

    async def settle(
        self, leases: str, windows: list[Window], request_id: str, refunds: list[int]
    ) -> list[int] | None:
        """Give each window its refund (negative: charge more) once; the totals after, or None if already settled."""
        ...


class MemorySpendStore:
    """Totals in process memory: exact within one process, per replica across several.

    Bounded: the least recently used subjects go first beyond ``max_keys``.
    """

    def __init__(self, *, max_keys: int = 100_000, lease_us: int = DEFAULT_LEASE_US) -> None:
        """Create an empty store."""
        self._totals: OrderedDict[str, int] = OrderedDict()
        self._leases: dict[str, dict[str, int]] = {}
        self._max_keys = max_keys
        self._lease_us = lease_us

    def total(self, key: str) -> int:
        """A window's total (0 when never charged)."""
        return self._totals.get(key, 0)

    def _set(self, key: str, value: int) -> None:
        self._totals[key] = value
        self._totals.move_to_end(key)
        while len(self._totals) > self._max_keys:
            self._totals.popitem(last=False)

    async def reserve(self, leases: str, windows: list[Window], request_id: str, now_us: int) -> SpendResult:
        """See :meth:`reserve_now` (no ``await`` between check and charge: atomic on the loop)."""
        return self.reserve_now(leases, windows, request_id, now_us)

    def reserve_now(self, leases: str, windows: list[Window], request_id: str, now_us: int) -> SpendResult:
        """Check every window, then charge all of them or none."""
        spent = [self.total(w.key) for w in windows]
        for index, (window, total) in enumerate(zip(windows, spent, strict=True), start=1):
            if total + window.cost > window.limit:
                return SpendResult(index, spent, self)
        for index, window in enumerate(windows):
            spent[index] += window.cost
            self._set(window.key, spent[index])
        held = self._leases.setdefault(leases, {})
        for rid in [r for r, deadline in held.items() if deadline <= now_us]:
            del held[rid]
        held[request_id] = now_us + self._lease_us
        return SpendResult(0, spent, self)

    async def settle(
        self, leases: str, windows: list[Window], request_id: str, refunds: list[int]
    ) -> list[int] | None:
        """See :meth:`settle_now`."""
        return self.settle_now(leases, windows, request_id, refunds)

    def settle_now(
        self, leases: str, windows: list[Window], request_id: str, refunds: list[int]
    ) -> list[int] | None:
        """Give the refunds back once, never below zero."""
        held = self._leases.get(leases)
        if held is None or held.pop(request_id, None) is None:
            return None
        if not held:
            del self._leases[leases]
        totals = []
        for window, refund in zip(windows, refunds, strict=True):
            value = max(0, self.total(window.key) - refund)
            self._set(window.key, value)
            totals.append(value)
        return totals


class RedisSpendStore:
    """Totals in Redis, through the rate limiter's own connection and its outage handling.

    While Redis is unreachable the policy's ``onRedisUnavailable`` applies, as for the
    rate limits: failOpen counts in a local :class:`MemorySpendStore`, failClosed refuses.
    A settle that cannot reach Redis is dropped: the reservation stays charged, which
    over-counts and never lets a budget overrun.
    """

    def __init__(self, backend: ResilientRedisBackend) -> None:
        """Share ``backend``'s Redis connection and health."""
        self._backend = backend
        self.local = MemorySpendStore()

    async def reserve(self, leases: str, windows: list[Window], request_id: str, now_us: int) -> SpendResult:
        """One script round trip, or the fallback while Redis is down."""
        from agent_runtime.limits.redis import UNAVAILABLE as REDIS_DOWN

        backend = self._backend
        if backend.redis is not None and backend.available():
            args: list[str | int] = [request_id, now_us, DEFAULT_LEASE_US]
            for window in windows:
                args += [window.limit, window.ttl_ms, window.cost]
            try:
                raw = await backend.redis.run_script(RESERVE_LUA, [leases, *(w.key for w in windows)], args)
            except REDIS_DOWN as exc:
                backend.mark_down(exc)
            else:
                backend.mark_up()
                fields = [int(v) for v in _text(raw).split()]
                return SpendResult(fields[0], fields[1:], self)
        if backend.fail_open:
            return await self.local.reserve(leases, windows, request_id, now_us)
        return SpendResult(UNAVAILABLE, [0] * len(windows), None)

    async def settle(
        self, leases: str, windows: list[Window], request_id: str, refunds: list[int]
    ) -> list[int] | None:
        """One script round trip; idempotent on the server."""
        from agent_runtime.limits.redis import UNAVAILABLE as REDIS_DOWN

        backend = self._backend
        if backend.redis is None or not backend.available():
            return None
        args: list[str | int] = [request_id]
        for window, refund in zip(windows, refunds, strict=True):
            args += [refund, window.ttl_ms]
        try:
            raw = await backend.redis.run_script(SETTLE_LUA, [leases, *(w.key for w in windows)], args)
        except REDIS_DOWN as exc:
            backend.mark_down(exc)
            return None
        text = _text(raw)
        return [int(v) for v in text.split()] if text else None


def _text(raw: object) -> str:
    if isinstance(raw, bytes):
        return raw.decode()
    if isinstance(raw, str):
        return raw
    raise ValueError(f"unexpected spend script reply {raw!r}")
