"""Limiter arithmetic and policy resolution, on the memory backend with a pinned clock."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import pytest

from agent_runtime.config import RateLimitConfig
from agent_runtime.limits import Subject, build_limiter, estimate_tokens, resolve_subject
from agent_runtime.limits.base import US_PER_S, LimitSpec, Refusal
from agent_runtime.limits.memory import MemoryBackend
from agent_runtime.limits.policy import DEFAULT_MAX_TOKENS, RateLimiter, estimate_text_tokens

T0 = 1_764_000_000 * US_PER_S


@dataclass(frozen=True)
class P:
    id: str
    kind: str
    tier: str | None = None


def config(**over: object) -> RateLimitConfig:
    data: dict[str, object] = {"policy": "ns/policy", "limits": {"requests_per_minute": 60}}
    data.update(over)
    return RateLimitConfig.model_validate(data)


def no_files(_: str) -> str | None:
    return None


async def admit_many(limiter: RateLimiter, subject: Subject, n: int, now: int, tokens: int = 0) -> list[bool]:
    return [(await limiter.admit(subject, tokens, now_us=now)).allowed for _ in range(n)]


# --- arithmetic -------------------------------------------------------------------------------


def test_requests_per_minute_is_a_rolling_minute() -> None:
    b = MemoryBackend()
    spec = LimitSpec(requests_per_minute=3)
    for i in range(3):
        assert b.admit_now("k", spec, 0, f"r{i}", T0 + i).allowed
    refused = b.admit_now("k", spec, 0, "r3", T0 + 30 * US_PER_S)
    assert not refused.allowed and refused.refusal is Refusal.REQUESTS
    # The first admissions sit in bucket T0//1s; they leave the window 61 buckets later.
    assert refused.retry_after_us == (T0 // US_PER_S + 61) * US_PER_S - (T0 + 30 * US_PER_S)
    assert not b.admit_now("k", spec, 0, "r4", T0 + 61 * US_PER_S - 1).allowed
    assert b.admit_now("k", spec, 0, "r5", T0 + 61 * US_PER_S).allowed


def test_burst_below_rate_spaces_requests() -> None:
    b = MemoryBackend()
    spec = LimitSpec(requests_per_minute=60, burst=2)
    assert b.admit_now("k", spec, 0, "a", T0).allowed
    assert b.admit_now("k", spec, 0, "b", T0).allowed
    third = b.admit_now("k", spec, 0, "c", T0)
    assert not third.allowed and third.refusal is Refusal.BURST
    assert third.retry_after_us == US_PER_S  # one emission interval at 60/min
    assert b.admit_now("k", spec, 0, "d", T0 + US_PER_S).allowed


def test_burst_at_or_above_rate_is_the_window() -> None:
    from agent_runtime.config import RateLimits

    assert LimitSpec.from_limits(RateLimits(requests_per_minute=10, burst=10)).burst is None
    assert LimitSpec.from_limits(RateLimits(requests_per_minute=10, burst=50)).burst is None
    assert LimitSpec.from_limits(RateLimits(requests_per_minute=10, burst=3)).burst == 3
    assert LimitSpec.from_limits(RateLimits(tokens_per_minute=10, burst=3)).burst is None


def test_token_reservation_refused_before_spending() -> None:
    b = MemoryBackend()
    spec = LimitSpec(tokens_per_minute=1000)
    assert b.admit_now("k", spec, 700, "a", T0).allowed
    refused = b.admit_now("k", spec, 400, "b", T0)
    assert not refused.allowed and refused.refusal is Refusal.TOKENS
    assert refused.tokens_remaining == 300
    assert b.admit_now("k", spec, 300, "c", T0).allowed


def test_settle_refunds_unused_tokens_and_charges_overruns() -> None:
    b = MemoryBackend()
    spec = LimitSpec(tokens_per_minute=1000)
    first = b.admit_now("k", spec, 800, "a", T0)
    b.settle_now("k", "a", first.bucket, 800 - 100, True, T0 + 10)  # used 100 of 800
    assert b.admit_now("k", spec, 900, "b", T0 + 20).allowed
    second = b.admit_now("k", spec, 0, "c", T0 + 30)
    assert second.tokens_remaining == 0
    # An overrun (usage above the reservation) is charged at settle time.
    b2 = MemoryBackend()
    d = b2.admit_now("k", spec, 100, "a", T0)
    b2.settle_now("k", "a", d.bucket, 100 - 600, True, T0)
    assert b2.admit_now("k", spec, 0, "x", T0).tokens_remaining == 400


def test_reservation_above_the_whole_budget_never_passes() -> None:
    b = MemoryBackend()
    d = b.admit_now("k", LimitSpec(tokens_per_minute=100), 101, "a", T0)
    assert not d.allowed and d.refusal is Refusal.TOKENS and d.retry_after_us == 61 * US_PER_S


def test_concurrency_cap_and_release() -> None:
    b = MemoryBackend()
    spec = LimitSpec(concurrency=2)
    assert b.admit_now("k", spec, 0, "a", T0).allowed
    assert b.admit_now("k", spec, 0, "b", T0).allowed
    refused = b.admit_now("k", spec, 0, "c", T0)
    assert not refused.allowed and refused.refusal is Refusal.CONCURRENCY
    b.settle_now("k", "a", refused.bucket, 0, False, T0)
    assert b.admit_now("k", spec, 0, "c", T0).allowed


def test_concurrency_lease_expires_for_a_crashed_holder() -> None:
    b = MemoryBackend(lease_us=10 * US_PER_S)
    spec = LimitSpec(concurrency=1)
    assert b.admit_now("k", spec, 0, "a", T0).allowed
    assert not b.admit_now("k", spec, 0, "b", T0 + 9 * US_PER_S).allowed
    assert b.admit_now("k", spec, 0, "b", T0 + 10 * US_PER_S).allowed


def test_expired_leases_are_found_whatever_their_order() -> None:
    # Leases taken at different times (and a clock that went back) expire each at its own
    # deadline: the scan is skipped only while no lease can have expired.
    b = MemoryBackend(lease_us=10 * US_PER_S)
    spec = LimitSpec(concurrency=2)
    assert b.admit_now("k", spec, 0, "late", T0 + 5 * US_PER_S).allowed
    assert b.admit_now("k", spec, 0, "early", T0).allowed
    assert not b.admit_now("k", spec, 0, "x", T0 + 9 * US_PER_S).allowed
    assert b.admit_now("k", spec, 0, "y", T0 + 10 * US_PER_S).allowed  # "early" expired
    assert not b.admit_now("k", spec, 0, "z", T0 + 14 * US_PER_S).allowed
    assert b.admit_now("k", spec, 0, "w", T0 + 15 * US_PER_S).allowed  # "late" expired
    b.settle_now("k", "y", 0, 0, False, T0 + 15 * US_PER_S)
    b.settle_now("k", "w", 0, 0, False, T0 + 15 * US_PER_S)
    assert b.admit_now("k", spec, 0, "v", T0 + 16 * US_PER_S).allowed
    assert b.admit_now("k", spec, 0, "u", T0 + 16 * US_PER_S).allowed
    assert not b.admit_now("k", spec, 0, "t", T0 + 25 * US_PER_S).allowed
    assert b.admit_now("k", spec, 0, "s", T0 + 26 * US_PER_S).allowed


def test_refusal_charges_nothing() -> None:
    b = MemoryBackend()
    spec = LimitSpec(requests_per_minute=5, tokens_per_minute=100, concurrency=1)
    assert b.admit_now("k", spec, 50, "a", T0).allowed
    for i in range(10):
        assert not b.admit_now("k", spec, 10, f"x{i}", T0).allowed  # concurrency
    b.settle_now("k", "a", T0 // US_PER_S, 0, True, T0)
    d = b.admit_now("k", spec, 50, "b", T0)
    assert d.allowed and d.requests_remaining == 3 and d.tokens_remaining == 0


def test_longest_wait_wins_when_several_limits_refuse() -> None:
    b = MemoryBackend()
    spec = LimitSpec(requests_per_minute=1, concurrency=1)
    assert b.admit_now("k", spec, 0, "a", T0).allowed
    d = b.admit_now("k", spec, 0, "b", T0)
    assert d.refusal is Refusal.REQUESTS and d.retry_after_us > US_PER_S


def test_memory_is_bounded() -> None:
    b = MemoryBackend(max_keys=100)
    spec = LimitSpec(requests_per_minute=10)
    for i in range(1000):
        b.admit_now(f"k{i}", spec, 0, "r", T0)
    assert len(b) == 100


def test_idle_keys_are_swept() -> None:
    b = MemoryBackend()
    spec = LimitSpec(requests_per_minute=10)
    for i in range(500):
        b.admit_now(f"old{i}", spec, 0, "r", T0)
    later = T0 + 120 * US_PER_S
    for i in range(1024):
        b.admit_now("hot", spec, 0, f"r{i}", later + i)
    assert len(b) == 1


# --- policy -------------------------------------------------------------------------------------


def test_subject_resolution_by_count_by() -> None:
    key = P("key-1", "apiKey", "gold")
    user = P("alice", "jwt", None)
    anon = P("anonymous", "anonymous")
    assert resolve_subject("apiKey", key) == Subject("apiKey", "key-1", "gold")
    assert resolve_subject("apiKey", user) == Subject("user", "alice", None)
    assert resolve_subject("apiKey", anon).kind == "anonymous"
    assert resolve_subject("user", user) == Subject("user", "alice", None)
    assert resolve_subject("user", key) == Subject("apiKey", "key-1", "gold")
    assert resolve_subject("session", user, "s-1") == Subject("session", "s-1", None, "jwt\x00alice")
    assert resolve_subject("session", user, None) == Subject("user", "alice", None)
    assert resolve_subject("agent", key, "s-1", agent="ns/bot") == Subject("agent", "ns/bot", "gold")


def test_subject_keys_hide_caller_input() -> None:
    s = Subject("session", "../../etc/passwd {weird}\n")
    assert s.key.startswith("session:") and len(s.key) == len("session:") + 32
    assert "{" not in s.key and "\n" not in s.key


async def test_count_by_session_separates_budgets() -> None:
    limiter = build_limiter(config(count_by="session", limits={"requests_per_minute": 2}), no_files)
    alice = P("alice", "jwt")
    s1, s2 = limiter.subject(alice, "s1"), limiter.subject(alice, "s2")
    assert await admit_many(limiter, s1, 3, T0) == [True, True, False]
    assert await admit_many(limiter, s2, 3, T0) == [True, True, False]
    # Another caller naming alice's session id has a budget of its own.
    mallory = limiter.subject(P("mallory", "jwt"), "s1")
    assert mallory.key != s1.key and limiter.key_for(mallory) != limiter.key_for(s1)
    assert await admit_many(limiter, mallory, 3, T0) == [True, True, False]


async def test_count_by_agent_shares_one_budget() -> None:
    limiter = build_limiter(
        config(count_by="agent", limits={"requests_per_minute": 3}), no_files, agent="ns/a"
    )
    results = []
    for caller in ("k1", "k2", "k3", "k4"):
        subject = limiter.subject(P(caller, "apiKey"))
        results.append((await limiter.admit(subject, 0, now_us=T0)).allowed)
    assert results == [True, True, True, False]


async def test_subjects_follow_the_caller_and_a_reloaded_policy() -> None:
    limiter = build_limiter(config(count_by="apiKey"), no_files)
    gold, plain = P("k1", "apiKey", "gold"), P("k1", "apiKey")
    assert limiter.subject(gold) == Subject("apiKey", "k1", "gold")
    assert limiter.subject(plain) == Subject("apiKey", "k1", None)
    assert limiter.subject(gold, "s1") == Subject("apiKey", "k1", "gold")
    key = limiter.key_for(limiter.subject(gold))
    await limiter.reload(config(count_by="session", policy="ns/other"), no_files)
    assert limiter.subject(gold, "s1") == Subject("session", "s1", "gold", "apiKey\x00k1")
    assert limiter.subject(gold) == Subject("apiKey", "k1", "gold")
    assert limiter.key_for(limiter.subject(gold)) != key
    assert "ns/other" in limiter.key_for(limiter.subject(gold))


async def test_count_by_api_key_and_user() -> None:
    limiter = build_limiter(config(count_by="user", limits={"requests_per_minute": 1}), no_files)
    assert (await limiter.admit(limiter.subject(P("alice", "jwt")), 0, now_us=T0)).allowed
    assert not (await limiter.admit(limiter.subject(P("alice", "jwt")), 0, now_us=T0)).allowed
    assert (await limiter.admit(limiter.subject(P("bob", "jwt")), 0, now_us=T0)).allowed


async def test_tiers_select_limits() -> None:
    cfg = config(
        limits={"requests_per_minute": 2},
        tiers=[
            {"name": "gold", "limits": {"requests_per_minute": 5}},
            {"name": "tokens-only", "limits": {"tokens_per_minute": 100}},
        ],
    )
    limiter = build_limiter(cfg, no_files)
    gold = limiter.subject(P("g", "apiKey", "gold"))
    free = limiter.subject(P("f", "apiKey", None))
    unknown = limiter.subject(P("u", "apiKey", "platinum"))
    tok = limiter.subject(P("t", "apiKey", "tokens-only"))
    assert sum(await admit_many(limiter, gold, 10, T0)) == 5
    assert sum(await admit_many(limiter, free, 10, T0)) == 2
    assert sum(await admit_many(limiter, unknown, 10, T0)) == 2  # unknown tier: defaults
    assert sum(await admit_many(limiter, tok, 10, T0, tokens=30)) == 3
    a = await limiter.admit(gold, 0, now_us=T0)
    assert a.headers["RateLimit-Limit"] == "5"


async def test_refusal_headers_and_status() -> None:
    limiter = build_limiter(config(limits={"requests_per_minute": 1, "tokens_per_minute": 500}), no_files)
    subject = limiter.subject(P("k", "apiKey"))
    ok = await limiter.admit(subject, 100, now_us=T0)
    assert ok.allowed and ok.status == 200
    assert ok.headers["RateLimit-Limit"] == "1"
    assert ok.headers["RateLimit-Remaining"] == "0"
    assert ok.headers["X-RateLimit-Remaining-Tokens"] == "400"
    no = await limiter.admit(subject, 100, now_us=T0 + 10 * US_PER_S)
    assert not no.allowed and no.status == 429 and no.limit == "requests"
    expected = (T0 // US_PER_S + 61) * US_PER_S - (T0 + 10 * US_PER_S)
    assert no.retry_after == expected / US_PER_S
    assert no.headers["Retry-After"] == str(-(-expected // US_PER_S))
    assert no.headers["RateLimit-Reset"] == no.headers["Retry-After"]
    assert no.headers["RateLimit-Remaining"] == "0"


async def test_settle_is_idempotent_and_returns_unused() -> None:
    limiter = build_limiter(config(limits={"tokens_per_minute": 1000, "concurrency": 1}), no_files)
    subject = limiter.subject(P("k", "apiKey"))
    a = await limiter.admit(subject, 600, now_us=T0)
    assert a.reserved_tokens == 600
    assert not (await limiter.admit(subject, 1, now_us=T0)).allowed  # concurrency
    assert await a.settle(250, now_us=T0) == 350
    assert await a.settle(250, now_us=T0) == 0
    assert a.settled
    b = await limiter.admit(subject, 750, now_us=T0)
    assert b.allowed and b.headers["X-RateLimit-Remaining-Tokens"] == "0"
    await b.settle(None, now_us=T0)  # usage unknown: reservation stays charged
    assert not (await limiter.admit(subject, 1, now_us=T0)).allowed


async def test_no_policy_admits_everything() -> None:
    limiter = build_limiter(None, no_files)
    a = await limiter.admit(limiter.subject(None), 10**9)
    assert a.allowed and a.headers == {}
    assert await a.settle(5) == 0


async def test_reload_keeps_counters_and_applies_new_values() -> None:
    limiter = build_limiter(config(limits={"requests_per_minute": 3}), no_files)
    subject = limiter.subject(P("k", "apiKey"))
    assert await admit_many(limiter, subject, 3, T0) == [True, True, True]
    backend = limiter.backend
    await limiter.reload(config(limits={"requests_per_minute": 5}), no_files)
    assert limiter.backend is backend
    assert await admit_many(limiter, subject, 3, T0) == [True, True, False]
    await limiter.reload(config(limits={"requests_per_minute": 1}), no_files)
    assert await admit_many(limiter, subject, 1, T0) == [False]


def test_estimate_tokens() -> None:
    msgs: list[dict[str, Any]] = [
        {"role": "system", "content": "x" * 40},
        {"role": "user", "content": [{"type": "text", "text": "y" * 8}]},
    ]
    assert estimate_tokens(msgs, 100) == 10 + 2 + 2 * 4 + 3 + 100
    assert estimate_tokens([], None) == DEFAULT_MAX_TOKENS
    assert estimate_tokens(None, 0) == 0


def test_estimate_text_tokens_matches_the_messages_estimate() -> None:
    for texts in ([], [""], ["x" * 40, "y" * 9], ["héllo", "z" * 4001, "", "w"]):
        for max_tokens in (None, 0, 64):
            messages = [{"content": t} for t in texts]
            assert estimate_text_tokens(texts, max_tokens) == estimate_tokens(messages, max_tokens)


@pytest.mark.parametrize("count_by", ["apiKey", "user", "session", "agent"])
async def test_key_includes_policy_and_prefix(count_by: str) -> None:
    limiter = build_limiter(config(count_by=count_by, backend={"key_prefix": "pfx:"}), no_files)
    key = limiter.key_for(limiter.subject(P("k", "apiKey"), "s"))
    assert key.startswith("pfx:{ns/policy|") and key.endswith("}")
