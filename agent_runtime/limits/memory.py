"""In-memory limiter backend: exact for one replica, bounded in memory.

Mirrors ``ratelimit.lua`` operation for operation (same integer arithmetic in
microseconds), so the property tests can hold the two to identical decisions.
Admission runs without an ``await`` between check and charge, which makes it
atomic on the event loop.
"""

from __future__ import annotations

import time
from collections import OrderedDict
from dataclasses import dataclass, field

from agent_runtime.limits.base import (
    BUCKET_US,
    CONCURRENCY_RETRY_US,
    DEFAULT_LEASE_US,
    NEVER_RETRY_US,
    WINDOW_BUCKETS,
    Decision,
    LimitSpec,
    Refusal,
    gcra_interval_us,
)


def now_us() -> int:
    """Wall-clock time in microseconds (the time base shared with Redis ``TIME``)."""
    return time.time_ns() // 1000


def window_prune(buckets: dict[int, int], bucket: int, lowest: int | None = None) -> bool:
    """Drop buckets that left the window of ``bucket``; True when some did.

    ``lowest`` is the smallest bucket of ``buckets`` when the caller keeps it (else it is found).
    """
    low = bucket - WINDOW_BUCKETS
    # min() runs in C: the list is built only when a bucket did leave (about once a second).
    if buckets and (min(buckets) if lowest is None else lowest) < low:
        for old in [b for b in buckets if b < low]:
            del buckets[old]
        return True
    return False


def window_check(
    buckets: dict[int, int], bucket: int, now: int, limit: int, cost: int, lowest: int | None = None
) -> tuple[int, int, int]:
    """Check ``cost`` against a pruned window (``lowest``: its smallest bucket, when known).

    Returns ``(retry_after_us, remaining_after, reset_us)``; ``retry_after_us`` is 0
    when it fits. The retry is exact: the moment enough old buckets have left the
    window for ``cost`` to fit, assuming no other traffic.
    """
    used = sum(buckets.values())
    if used + cost <= limit:
        remaining = limit - used - cost
        if buckets and 0 not in buckets.values():
            # Every bucket counts (the usual case; values are never negative): min() in C.
            oldest: int | None = min(buckets) if lowest is None else lowest
        else:
            oldest = min((b for b, v in buckets.items() if v > 0), default=bucket if cost > 0 else None)
        reset = 0 if oldest is None else (oldest + WINDOW_BUCKETS + 1) * BUCKET_US - now
        return 0, remaining, reset
    if cost > limit:
        return NEVER_RETRY_US, max(0, limit - used), NEVER_RETRY_US
    need = used + cost - limit
    freed = 0
    for b in sorted(buckets):
        freed += buckets[b]
        if freed >= need:
            retry = (b + WINDOW_BUCKETS + 1) * BUCKET_US - now
            return retry, max(0, limit - used), retry
    raise AssertionError("window usage exceeds its own sum")  # pragma: no cover


def gcra_check(tat: int | None, now: int, interval: int, burst: int) -> tuple[int, int]:
    """GCRA for one request: ``(retry_after_us, new_tat)``; allowed when the retry is 0."""
    base = now if tat is None or tat < now else tat
    new_tat = base + interval
    allow_at = new_tat - burst * interval
    if allow_at > now:
        return allow_at - now, tat if tat is not None else 0
    return 0, new_tat


@dataclass(slots=True)
class _State:
    """Counters of one key."""

    requests: dict[int, int] = field(default_factory=dict)
    tokens: dict[int, int] = field(default_factory=dict)
    # The smallest bucket of each window while it holds any (kept on every new bucket, found
    # again when buckets leave): admissions need it twice per window, a scan of up to 61 each.
    requests_low: int = 0
    tokens_low: int = 0
    tat: int | None = None
    leases: dict[str, int] = field(default_factory=dict)
    # No lease deadline is earlier than this (a lower bound, kept on every new lease): while it
    # is in the future no lease can have expired, so admissions skip the scan of the leases.
    lease_floor: int = 0
    last_used: int = 0


class MemoryBackend:
    """Limiter counters in process memory.

    ``max_keys`` bounds memory: the least recently used keys go first, and keys idle
    for longer than the window (with no live concurrency lease) are swept.
    """

    def __init__(self, *, max_keys: int = 100_000, lease_us: int = DEFAULT_LEASE_US) -> None:
        """Create an empty store."""
        self._states: OrderedDict[str, _State] = OrderedDict()
        self._max_keys = max_keys
        self._lease_us = lease_us
        self._ops = 0

    def __len__(self) -> int:
        """Number of keys held (for tests of bounded memory)."""
        return len(self._states)

    def _state(self, key: str, now: int) -> _State:
        state = self._states.get(key)
        if state is None:
            state = _State()
            self._states[key] = state
        else:
            self._states.move_to_end(key)
        state.last_used = now
        self._ops += 1
        if self._ops % 1024 == 0:
            self._sweep(now)
        while len(self._states) > self._max_keys:
            self._states.popitem(last=False)
        return state

    def _sweep(self, now: int) -> None:
        idle_before = now - (WINDOW_BUCKETS + 2) * BUCKET_US
        # Only the idle head is visited (not a copy of every key): the dict cannot shrink while
        # it is iterated, so the idle keys are collected first.
        idle: list[str] = []
        for key, state in self._states.items():
            if state.last_used >= idle_before:
                # Ordered by last use: everything after this one is fresher.
                break
            live = any(deadline > now for deadline in state.leases.values())
            if not live and (state.tat is None or state.tat <= now):
                idle.append(key)
        for key in idle:
            del self._states[key]

    async def admit(
        self, key: str, spec: LimitSpec, tokens: int, request_id: str, now_us: int | None = None
    ) -> Decision:
        """Check all limits of ``spec`` and charge them together only when every one passes."""
        return self.admit_now(key, spec, tokens, request_id, now_us)

    def admit_now(
        self, key: str, spec: LimitSpec, tokens: int, request_id: str, now: int | None = None
    ) -> Decision:
        """Synchronous admission (the arithmetic; ``admit`` wraps it)."""
        now = now_us() if now is None else now
        bucket = now // BUCKET_US
        state = self._state(key, now)
        # Each refusing limit in turn: the longest wait wins (after it every limit that refused would
        # pass); inlined, since a closure per admission costs more than the checks themselves.
        refusal = Refusal.NONE
        retry = 0

        req_remaining: int | None = None
        req_reset = 0
        if spec.requests_per_minute is not None:
            if window_prune(state.requests, bucket, state.requests_low):
                state.requests_low = min(state.requests, default=0)
            after, req_remaining, req_reset = window_check(
                state.requests, bucket, now, spec.requests_per_minute, 1, state.requests_low
            )
            if after:
                refusal, retry = Refusal.REQUESTS, max(retry, after)
        new_tat = state.tat
        if spec.burst is not None and spec.requests_per_minute is not None:
            after, new_tat = gcra_check(
                state.tat, now, gcra_interval_us(spec.requests_per_minute), spec.burst
            )
            if after and (after > retry or refusal is Refusal.NONE):
                refusal, retry = Refusal.BURST, max(retry, after)
        tok_remaining: int | None = None
        tok_reset = 0
        track_tokens = spec.tokens_per_minute is not None
        if spec.tokens_per_minute is not None:
            if window_prune(state.tokens, bucket, state.tokens_low):
                state.tokens_low = min(state.tokens, default=0)
            after, tok_remaining, tok_reset = window_check(
                state.tokens, bucket, now, spec.tokens_per_minute, tokens, state.tokens_low
            )
            if after and (after > retry or refusal is Refusal.NONE):
                refusal, retry = Refusal.TOKENS, max(retry, after)
        # A lease is the concurrency slot, and it makes settle idempotent: only the settle
        # that removes it refunds tokens.
        leased = spec.concurrency is not None or track_tokens
        if leased and state.leases and state.lease_floor <= now:
            for rid in [r for r, deadline in state.leases.items() if deadline <= now]:
                del state.leases[rid]
            state.lease_floor = min(state.leases.values(), default=0)
        if (
            spec.concurrency is not None
            and len(state.leases) >= spec.concurrency
            and (retry < CONCURRENCY_RETRY_US or refusal is Refusal.NONE)
        ):
            refusal, retry = Refusal.CONCURRENCY, max(retry, CONCURRENCY_RETRY_US)
        if refusal is not Refusal.NONE:
            return Decision(
                False, refusal, retry, req_remaining, req_reset, tok_remaining, tok_reset, bucket, now, self
            )
        if spec.requests_per_minute is not None:
            if not state.requests or bucket < state.requests_low:
                state.requests_low = bucket
            state.requests[bucket] = state.requests.get(bucket, 0) + 1
        if spec.burst is not None:
            state.tat = new_tat
        if track_tokens and tokens > 0:
            if not state.tokens or bucket < state.tokens_low:
                state.tokens_low = bucket
            state.tokens[bucket] = state.tokens.get(bucket, 0) + tokens
        if leased:
            deadline = now + self._lease_us
            if not state.leases or deadline < state.lease_floor:
                state.lease_floor = deadline
            state.leases[request_id] = deadline
        return Decision(
            True, Refusal.NONE, 0, req_remaining, req_reset, tok_remaining, tok_reset, bucket, now, self
        )

    async def settle(
        self,
        key: str,
        request_id: str,
        bucket: int,
        token_refund: int,
        track_tokens: bool,
        now_us: int | None = None,
    ) -> None:
        """Release the slot and refund (or charge) tokens against the admission's bucket."""
        self.settle_now(key, request_id, bucket, token_refund, track_tokens, now_us)

    def settle_now(
        self,
        key: str,
        request_id: str,
        bucket: int,
        token_refund: int,
        track_tokens: bool,
        now: int | None = None,
    ) -> None:
        """Synchronous settle (``settle`` wraps it)."""
        now = now_us() if now is None else now
        state = self._states.get(key)
        if state is None:
            return
        if state.leases.pop(request_id, None) is None:
            return
        if not track_tokens or token_refund == 0:
            return
        current = now // BUCKET_US
        if token_refund > 0:
            # A refund only matters while the admission's bucket is still counted.
            held = state.tokens.get(bucket)
            if held is not None and bucket >= current - WINDOW_BUCKETS:
                state.tokens[bucket] = max(0, held - token_refund)
        else:
            # Usage above the reservation is charged now, so the next requests pay for it.
            if not state.tokens or current < state.tokens_low:
                state.tokens_low = current
            state.tokens[current] = state.tokens.get(current, 0) - token_refund

    async def aclose(self) -> None:
        """Nothing to release."""
