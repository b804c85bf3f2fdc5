"""Shared vocabulary of the limiter backends: resolved limits, decisions, the backend protocol.

Both backends (memory and Redis/Lua) implement the same arithmetic, in integer
microseconds, so that their decisions are identical for the same inputs; the
property tests hold them to that.

Per-minute budgets are *rolling windows* counted in one-second buckets: an
admission at time ``t`` (bucket ``i = t // 1 s``) sees the usage of buckets
``i - 60 .. i`` (61 buckets). Every real 60-second window is covered by the
buckets checked at its last admission, so no rolling minute ever holds more
than the limit, whatever the replica count or the timing; the price is being
conservative by at most one bucket (one second) of usage. A GCRA (token
bucket) shapes bursts when ``burst`` is below the per-minute rate.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from enum import IntEnum
from typing import TYPE_CHECKING, Protocol

if TYPE_CHECKING:
    from agent_runtime.config import ProviderLimits, RateLimits

US_PER_S = 1_000_000
MINUTE_US = 60 * US_PER_S
BUCKET_US = US_PER_S
# Buckets i-60..i are counted: 61 buckets, so a bucket leaves the window 61 buckets after its own.
WINDOW_BUCKETS = 60
# How long a bucket can still matter, for key expiry (one spare second for clock granularity).
WINDOW_TTL_MS = (WINDOW_BUCKETS + 2) * BUCKET_US // 1000
# A concurrency slot whose holder never settled (crashed replica) is freed after this lease.
DEFAULT_LEASE_US = 900 * US_PER_S
# Retry-After for a full concurrency cap: the limiter cannot know when a slot frees.
CONCURRENCY_RETRY_US = US_PER_S
# Retry-After when a reservation exceeds the whole per-minute budget and can never pass.
NEVER_RETRY_US = (WINDOW_BUCKETS + 1) * BUCKET_US


class Refusal(IntEnum):
    """Which limit refused an admission (wire codes of the Lua script too)."""

    NONE = 0
    REQUESTS = 1
    BURST = 2
    TOKENS = 3
    CONCURRENCY = 4
    BACKEND = 5

    @property
    def label(self) -> str:
        """Name used in metrics, logs and ``Admission.limit``."""
        return self.name.lower()


def gcra_interval_us(requests_per_minute: int) -> int:
    """Emission interval of the burst GCRA in whole microseconds, rounded up (never faster than the rate)."""
    return -(-MINUTE_US // requests_per_minute)


@dataclass(frozen=True, slots=True)
class LimitSpec:
    """The limits that apply to one subject, resolved from the policy and the subject's tier."""

    requests_per_minute: int | None = None
    tokens_per_minute: int | None = None
    burst: int | None = None
    concurrency: int | None = None

    @classmethod
    def from_limits(cls, limits: RateLimits) -> LimitSpec:
        """Resolve API limits; ``burst`` only shapes traffic when it is below the per-minute rate."""
        burst = limits.burst
        rpm = limits.requests_per_minute
        if burst is not None and rpm is not None and burst >= rpm:
            # The rolling window already allows the whole minute at once; a larger burst
            # cannot exceed the per-minute budget, so no shaping is needed.
            burst = None
        if rpm is None:
            burst = None
        return cls(rpm, limits.tokens_per_minute, burst, limits.concurrency)

    @classmethod
    def from_provider(cls, limits: ProviderLimits) -> LimitSpec:
        """Provider quotas: per-minute requests and tokens, no burst shaping or concurrency."""
        return cls(limits.requests_per_minute, limits.tokens_per_minute)

    @property
    def empty(self) -> bool:
        """True when no limit is set at all."""
        return (
            self.requests_per_minute is None and self.tokens_per_minute is None and self.concurrency is None
        )

    def fingerprint(self) -> str:
        """Short text of the values, for logs and bench labels."""
        return f"rpm={self.requests_per_minute},tpm={self.tokens_per_minute},burst={self.burst},conc={self.concurrency}"


@dataclass(slots=True)
class Decision:
    """What a backend decided for one admission, with what the headers need.

    ``backend`` is the backend that must settle this admission (the local fallback
    when Redis was unreachable), so a settle always reaches the counters it charged.
    """

    allowed: bool
    refusal: Refusal
    retry_after_us: int
    requests_remaining: int | None
    requests_reset_us: int
    tokens_remaining: int | None
    tokens_reset_us: int
    bucket: int
    now_us: int
    backend: Backend | None = field(default=None, repr=False)


class Backend(Protocol):
    """Counter storage with the limiter arithmetic (memory, Redis)."""

    async def admit(
        self, key: str, spec: LimitSpec, tokens: int, request_id: str, now_us: int | None = None
    ) -> Decision:
        """Check every limit of ``spec`` and, only if all pass, charge them together."""
        ...

    async def settle(
        self,
        key: str,
        request_id: str,
        bucket: int,
        token_refund: int,
        track_tokens: bool,
        now_us: int | None = None,
    ) -> None:
        """Release the concurrency slot and give back ``token_refund`` tokens (negative: charge more)."""
        ...

    async def aclose(self) -> None:
        """Release connections."""
        ...
