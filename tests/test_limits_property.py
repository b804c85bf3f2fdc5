"""Property tests: the memory limiter and the Lua script against a naive reference model.

The reference keeps a plain log of admitted events and recomputes every answer
from scratch (usage by summing the log, Retry-After by searching forward for the
first second at which the request would fit, burst as a token bucket in exact
fractions). Both real implementations must give the very same decisions, down to
the microsecond of Retry-After, for any sequence of admissions, settles and clock
jumps. The Lua script runs on a real redis-server with the clock passed in.
"""

from __future__ import annotations

import asyncio
import copy
import itertools
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from fractions import Fraction
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from agent_runtime.limits.base import (
    BUCKET_US,
    CONCURRENCY_RETRY_US,
    DEFAULT_LEASE_US,
    NEVER_RETRY_US,
    US_PER_S,
    WINDOW_BUCKETS,
    Decision,
    LimitSpec,
    Refusal,
    gcra_interval_us,
)
from agent_runtime.limits.memory import MemoryBackend
from agent_runtime.limits.redis import (
    RedisBackend,
    admission_decision,
    admit_arg,
    settle_arg,
    window_keys,
)
from tests.support.redis_server import redis_or_skip

T0 = 1_764_000_000 * US_PER_S  # a fixed wall-clock origin; every example starts here


@dataclass
class _Event:
    bucket: int
    amount: int


@dataclass
class _Outcome:
    """The fields both implementations must agree on."""

    allowed: bool
    refusal: Refusal
    retry_after_us: int
    requests_remaining: int | None
    requests_reset_us: int
    tokens_remaining: int | None
    tokens_reset_us: int
    bucket: int

    @classmethod
    def of(cls, d: Decision) -> _Outcome:
        return cls(
            d.allowed,
            d.refusal,
            d.retry_after_us,
            d.requests_remaining,
            d.requests_reset_us,
            d.tokens_remaining,
            d.tokens_reset_us,
            d.bucket,
        )


@dataclass
class Reference:
    """The simplest model of the semantics we could write."""

    spec: LimitSpec
    requests: list[_Event] = field(default_factory=list)
    tokens: list[_Event] = field(default_factory=list)
    level: Fraction | None = None  # burst token bucket level, None = full
    level_at: int = 0
    leases: dict[str, int] = field(default_factory=dict)
    admitted_at: list[tuple[int, int]] = field(default_factory=list)  # (time, reserved tokens)

    @staticmethod
    def _usage(events: list[_Event], bucket: int) -> int:
        return sum(e.amount for e in events if e.bucket >= bucket - WINDOW_BUCKETS)

    def _window(self, events: list[_Event], now: int, limit: int, cost: int) -> tuple[int, int, int]:
        bucket = now // BUCKET_US
        used = self._usage(events, bucket)
        if used + cost <= limit:
            live = [e.bucket for e in events if e.bucket >= bucket - WINDOW_BUCKETS and e.amount > 0]
            if cost > 0:
                live.append(bucket)
            reset = (min(live) + WINDOW_BUCKETS + 1) * BUCKET_US - now if live else 0
            return 0, limit - used - cost, reset
        if cost > limit:
            return NEVER_RETRY_US, max(0, limit - used), NEVER_RETRY_US
        # Search forward, second by second, for the first moment the request fits.
        for later in itertools.count(bucket + 1):
            if self._usage(events, later) + cost <= limit:
                retry = later * BUCKET_US - now
                return retry, max(0, limit - used), retry
        raise AssertionError("unreachable")

    def _burst_level(self, now: int, interval: int, burst: int) -> Fraction:
        if self.level is None:
            return Fraction(burst)
        return min(Fraction(burst), self.level + Fraction(now - self.level_at, interval))

    def admit(self, now: int, tokens: int, rid: str, lease_us: int) -> _Outcome:
        spec = self.spec
        bucket = now // BUCKET_US
        failing: list[tuple[Refusal, int]] = []
        req: tuple[int, int | None, int] = (0, None, 0)
        if spec.requests_per_minute is not None:
            req = self._window(self.requests, now, spec.requests_per_minute, 1)
            after = req[0]
            if after:
                failing.append((Refusal.REQUESTS, after))
        level = None
        if spec.burst is not None and spec.requests_per_minute is not None:
            interval = gcra_interval_us(spec.requests_per_minute)
            level = self._burst_level(now, interval, spec.burst)
            if level < 1:
                wait = (1 - level) * interval
                assert wait.denominator == 1
                failing.append((Refusal.BURST, int(wait)))
        tok: tuple[int, int | None, int] = (0, None, 0)
        if spec.tokens_per_minute is not None:
            tok = self._window(self.tokens, now, spec.tokens_per_minute, tokens)
            if tok[0]:
                failing.append((Refusal.TOKENS, tok[0]))
        leased = spec.concurrency is not None or spec.tokens_per_minute is not None
        if leased:
            self.leases = {r: d for r, d in self.leases.items() if d > now}
        if spec.concurrency is not None and len(self.leases) >= spec.concurrency:
            failing.append((Refusal.CONCURRENCY, CONCURRENCY_RETRY_US))
        if failing:
            code, retry = max(failing, key=lambda f: f[1])
            return _Outcome(False, code, retry, req[1], req[2], tok[1], tok[2], bucket)
        if spec.requests_per_minute is not None:
            self.requests.append(_Event(bucket, 1))
        if level is not None:
            self.level, self.level_at = level - 1, now
        if spec.tokens_per_minute is not None and tokens > 0:
            self.tokens.append(_Event(bucket, tokens))
        if leased:
            self.leases[rid] = now + lease_us
        self.admitted_at.append((now, tokens))
        return _Outcome(True, Refusal.NONE, 0, req[1], req[2], tok[1], tok[2], bucket)

    def settle(self, now: int, rid: str, bucket: int, reserved: int, actual: int) -> None:
        if self.leases.pop(rid, None) is None:
            return  # nothing in flight under that id: a repeated or late settle changes nothing
        if self.spec.tokens_per_minute is None or reserved == actual:
            return
        current = now // BUCKET_US
        if actual < reserved:
            if bucket >= current - WINDOW_BUCKETS:
                for e in self.tokens:
                    if e.bucket == bucket and e.amount > 0:
                        take = min(e.amount, reserved - actual)
                        e.amount -= take
                        reserved -= take
                        if reserved == actual:
                            break
        else:
            self.tokens.append(_Event(current, actual - reserved))


specs = st.builds(
    lambda rpm, tpm, burst, conc: LimitSpec(rpm, tpm, burst if rpm and burst and burst < rpm else None, conc),
    st.one_of(st.none(), st.integers(1, 12)),
    st.one_of(st.none(), st.integers(1, 400)),
    st.one_of(st.none(), st.integers(1, 6)),
    st.one_of(st.none(), st.integers(1, 4)),
)
steps = st.one_of(
    st.integers(0, 3 * US_PER_S),  # mostly close together
    st.sampled_from([BUCKET_US, 59 * US_PER_S, 60 * US_PER_S, 61 * US_PER_S]),  # window edges
    st.integers(0, 130 * US_PER_S),
)
ops = st.lists(
    st.one_of(
        st.tuples(st.just("admit"), steps, st.integers(0, 150)),
        st.tuples(st.just("settle"), steps, st.integers(0, 10_000), st.integers(0, 200)),
    ),
    min_size=1,
    max_size=40,
)


AdmitFn = Callable[[LimitSpec, int, str, int], Decision]
SettleFn = Callable[[str, int, int, bool, int], None]


def _run(
    spec: LimitSpec, program: list[tuple[int | str, ...]], admit: AdmitFn, settle: SettleFn
) -> Iterator[tuple[_Outcome, _Outcome]]:
    """Drive one implementation and the reference through ``program``; yield both answers."""
    ref = Reference(spec)
    now = T0 + 123_456  # not on a bucket boundary
    live: list[tuple[str, int, int]] = []
    done: list[tuple[str, int, int]] = []
    counter = itertools.count()
    for op in program:
        now += int(op[1])
        if op[0] == "admit":
            rid = f"r{next(counter)}"
            tokens = int(op[2])
            got = admit(spec, tokens, rid, now)
            want = ref.admit(now, tokens, rid, DEFAULT_LEASE_US)
            yield _Outcome.of(got), want
            if want.allowed:
                live.append((rid, want.bucket, tokens))
        elif int(op[2]) % 7 == 0 and done:
            # A repeated settle (a retry after a lost reply, a replay after an outage).
            rid, bucket, reserved = done[int(op[2]) % len(done)]
            settle(rid, bucket, reserved - int(op[3]), spec.tokens_per_minute is not None, now)
            ref.settle(now, rid, bucket, reserved, int(op[3]))
        elif live:
            rid, bucket, reserved = live.pop(int(op[2]) % len(live))
            done.append((rid, bucket, reserved))
            # Real usage is usually below the reservation, sometimes above it.
            actual = int(op[3]) if int(op[3]) <= reserved or int(op[3]) % 3 == 0 else reserved
            refund = reserved - actual
            settle(rid, bucket, refund, spec.tokens_per_minute is not None, now)
            ref.settle(now, rid, bucket, reserved, actual)


@settings(max_examples=300, deadline=None)
@given(spec=specs, program=ops)
def test_memory_matches_reference(spec: LimitSpec, program: list[tuple[int | str, ...]]) -> None:
    backend = MemoryBackend()

    def admit(spec: LimitSpec, tokens: int, rid: str, now: int) -> Decision:
        return backend.admit_now("k", spec, tokens, rid, now)

    def settle(rid: str, bucket: int, refund: int, track: bool, now: int) -> None:
        backend.settle_now("k", rid, bucket, refund, track, now)

    for got, want in _run(spec, program, admit, settle):
        assert got == want


@settings(max_examples=200, deadline=None)
@given(
    rpm=st.integers(1, 10),
    tpm=st.integers(50, 300),
    program=st.lists(st.tuples(st.integers(0, 4 * US_PER_S), st.integers(0, 120)), max_size=60),
)
def test_no_rolling_minute_exceeds_the_limits(rpm: int, tpm: int, program: list[tuple[int, int]]) -> None:
    """Safety, on real time rather than buckets: any 60 s window holds at most the limits."""
    backend = MemoryBackend()
    spec = LimitSpec(rpm, tpm)
    now = T0 + 777
    admitted: list[tuple[int, int]] = []
    for i, (step, tokens) in enumerate(program):
        now += step
        if backend.admit_now("k", spec, tokens, f"r{i}", now).allowed:
            admitted.append((now, tokens))
    for t, _ in admitted:
        inside = [(u, n) for u, n in admitted if t - 60 * US_PER_S < u <= t]
        assert len(inside) <= rpm
        assert sum(n for _, n in inside) <= tpm


@settings(max_examples=200, deadline=None)
@given(rpm=st.integers(1, 10), program=st.lists(st.integers(0, 3 * US_PER_S), min_size=1, max_size=50))
def test_retry_after_is_exact(rpm: int, program: list[int]) -> None:
    """A refused request passes exactly at now + Retry-After and not one microsecond before."""
    spec = LimitSpec(rpm, None, max(1, rpm // 2), None)
    backend = MemoryBackend()
    now = T0 + 42
    for i, step in enumerate(program):
        now += step
        d = backend.admit_now("k", spec, 0, f"r{i}", now)
        if not d.allowed:
            probe = MemoryBackend()
            probe._states = copy.deepcopy(backend._states)
            assert not probe.admit_now("k", spec, 0, "early", now + d.retry_after_us - 1).allowed
            probe._states = copy.deepcopy(backend._states)
            assert probe.admit_now("k", spec, 0, "on-time", now + d.retry_after_us).allowed


# --- the Lua script, on a real redis-server -------------------------------------------------


@pytest.fixture(scope="module")
def redis_url() -> Iterator[str]:
    with redis_or_skip() as server:
        yield server.url


@pytest.fixture(scope="module")
def lua(redis_url: str) -> Iterator[tuple[asyncio.AbstractEventLoop, RedisBackend]]:
    loop = asyncio.new_event_loop()
    backend = RedisBackend(redis_url)
    yield loop, backend
    loop.run_until_complete(backend.aclose())
    loop.close()


_keys = itertools.count()


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(spec=specs, program=ops)
def test_lua_matches_reference(
    lua: tuple[asyncio.AbstractEventLoop, RedisBackend], spec: LimitSpec, program: list[tuple[int | str, ...]]
) -> None:
    loop, backend = lua
    key = f"prop:{{k{next(_keys)}}}"  # a fresh key per example

    def admit(spec: LimitSpec, tokens: int, rid: str, now: int) -> Decision:
        return loop.run_until_complete(backend.admit(key, spec, tokens, rid, now))

    def settle(rid: str, bucket: int, refund: int, track: bool, now: int) -> None:
        loop.run_until_complete(backend.settle(key, rid, bucket, refund, track, now))

    for got, want in _run(spec, program, admit, settle):
        assert got == want


# --- a rolling upgrade: replicas of the earlier key layout and of this one on one Redis -----------

_V1 = Path(__file__).parent / "support" / "ratelimit_v1"
_V1_SETTLES = (_V1 / "ratelimit_settles.lua").read_text()
V1_ADMIT = _V1_SETTLES + (_V1 / "ratelimit_admit.lua").read_text()
V1_SETTLE = _V1_SETTLES + (_V1 / "ratelimit_settle.lua").read_text()


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(spec=specs, program=ops, old=st.lists(st.booleans(), min_size=40, max_size=40))
def test_old_and_new_layout_count_together(
    lua: tuple[asyncio.AbstractEventLoop, RedisBackend],
    spec: LimitSpec,
    program: list[tuple[int | str, ...]],
    old: list[bool],
) -> None:
    """During a rolling upgrade old and new replicas share the counters exactly.

    Each admission runs either the earlier layout's scripts (``old[i]`` for the i-th) or this
    layout's, on the same keys; its settle runs on the same replica (layout) as its admission.
    """
    loop, backend = lua
    key = f"prop:{{u{next(_keys)}}}"
    keys = window_keys(key)
    on_old: dict[str, bool] = {}

    def admit(spec: LimitSpec, tokens: int, rid: str, now: int) -> Decision:
        index = int(rid[1:])
        on_old[rid] = old[index]
        if not on_old[rid]:
            return loop.run_until_complete(backend.admit(key, spec, tokens, rid, now))
        numbers = admit_arg(spec, tokens, now, DEFAULT_LEASE_US)
        raw = loop.run_until_complete(backend.run_script(V1_ADMIT, keys, [numbers, rid]))
        return admission_decision(raw, None)

    def settle(rid: str, bucket: int, refund: int, track: bool, now: int) -> None:
        if not on_old[rid]:
            loop.run_until_complete(backend.settle(key, rid, bucket, refund, track, now))
            # A settle rides with this replica's next admission; the next one here may be the
            # other layout's (another replica), which only sees it once it has left.
            loop.run_until_complete(backend.send_riding())
            return
        arg = settle_arg(rid, bucket, refund, track, now)
        loop.run_until_complete(backend.run_script(V1_SETTLE, keys[2:], [arg]))

    for got, want in _run(spec, program, admit, settle):
        assert got == want


def test_old_settle_after_new_admission(lua: tuple[asyncio.AbstractEventLoop, RedisBackend]) -> None:
    """An old replica's refund that lands after a new replica recounted the window still counts.

    The earlier layout's settle changes a bucket without the running sum: while its lease is in
    flight the new script recounts the token window on every admission instead of trusting it.
    """
    loop, backend = lua
    key = f"prop:{{u{next(_keys)}}}"
    keys = window_keys(key)
    spec = LimitSpec(None, 100, None, None)
    now = T0 + 5

    def new_admit(rid: str, tokens: int, at: int) -> Decision:
        return loop.run_until_complete(backend.admit(key, spec, tokens, rid, at))

    old = f"0 100 0 0 50 {now} {DEFAULT_LEASE_US}"
    assert admission_decision(
        loop.run_until_complete(backend.run_script(V1_ADMIT, keys, [old, "old"])), None
    ).allowed
    assert new_admit("a", 10, now + US_PER_S).tokens_remaining == 40
    refund = settle_arg("old", now // BUCKET_US, 40, True, now + 2 * US_PER_S)
    loop.run_until_complete(backend.run_script(V1_SETTLE, keys[2:], [refund]))
    assert new_admit("b", 10, now + 3 * US_PER_S).tokens_remaining == 70
    # The old lease is gone: the next admissions trust the running sum again.
    assert new_admit("c", 10, now + 4 * US_PER_S).tokens_remaining == 60
    assert new_admit("d", 10, now + 5 * US_PER_S).tokens_remaining == 50
