"""The Redis backend on a real redis-server: shared counters, one round trip, expiry, outages."""

from __future__ import annotations

import asyncio
from collections import Counter
from collections.abc import AsyncIterator, Callable, Iterator
from dataclasses import dataclass

import pytest
from redis.asyncio import Redis

from agent_runtime.config import LLMRuntimeConfig, RateLimitConfig
from agent_runtime.limits import build_limiter
from agent_runtime.limits.base import US_PER_S, LimitSpec
from agent_runtime.limits.policy import RateLimiter
from agent_runtime.limits.provider_gate import ProviderGate, build_provider_gate
from agent_runtime.limits.redis import SETTLE_DEFER, RedisBackend, ResilientRedisBackend
from agent_runtime.metrics import REGISTRY
from tests.support.redis_server import RedisServer, redis_or_skip

T0 = 1_764_000_000 * US_PER_S
URL_FILE = "ratelimit-redis-url"


@dataclass(frozen=True)
class P:
    id: str
    kind: str = "apiKey"
    tier: str | None = None


@pytest.fixture(scope="module")
def server() -> Iterator[RedisServer]:
    with redis_or_skip() as srv:
        yield srv


@pytest.fixture
async def client(server: RedisServer) -> AsyncIterator[Redis]:
    server.start()
    r = Redis.from_url(server.url)
    await r.flushall()
    yield r
    await r.aclose()  # type: ignore[attr-defined]


def cfg(backend_type: str = "redis", on_unavailable: str = "failOpen", **limits: int) -> RateLimitConfig:
    return RateLimitConfig.model_validate(
        {
            "policy": "ns/p",
            "limits": limits or {"requests_per_minute": 3},
            "backend": {"type": backend_type, "redis_url_file": URL_FILE},
            "on_redis_unavailable": on_unavailable,
        }
    )


def files(server: RedisServer):  # type: ignore[no-untyped-def]
    return lambda name: server.url + "\n" if name == URL_FILE else None


def degraded_gauge() -> float | None:
    return REGISTRY.get_sample_value("sentient_rate_limit_backend_degraded")


@pytest.fixture(params=["memory", "redis"])
async def make(
    request: pytest.FixtureRequest, server: RedisServer, client: Redis
) -> AsyncIterator[Callable[..., RateLimiter]]:
    made: list[RateLimiter] = []

    def _make(**over: object) -> RateLimiter:
        data: dict[str, object] = {
            "policy": "ns/p",
            "limits": {"requests_per_minute": 60},
            "backend": {"type": request.param, "redis_url_file": URL_FILE},
        }
        data.update(over)
        limiter = build_limiter(RateLimitConfig.model_validate(data), files(server))
        made.append(limiter)
        return limiter

    yield _make
    for limiter in made:
        await limiter.aclose()


# --- the same semantics on both backends --------------------------------------------------------


async def test_token_budget_refuses_before_spending(make) -> None:  # type: ignore[no-untyped-def]
    limiter = make(limits={"tokens_per_minute": 1000})
    s = limiter.subject(P("k"))
    a = await limiter.admit(s, 700, now_us=T0)
    assert a.allowed
    b = await limiter.admit(s, 400, now_us=T0)
    assert not b.allowed and b.status == 429 and b.limit == "tokens"
    assert await a.settle(200, now_us=T0) == 500
    assert (await limiter.admit(s, 800, now_us=T0)).allowed


async def test_concurrency_cap(make) -> None:  # type: ignore[no-untyped-def]
    limiter = make(limits={"concurrency": 2})
    s = limiter.subject(P("k"))
    held = [await limiter.admit(s, 0, now_us=T0) for _ in range(2)]
    third = await limiter.admit(s, 0, now_us=T0)
    assert all(a.allowed for a in held) and not third.allowed and third.limit == "concurrency"
    assert third.headers["Retry-After"] == "1"
    await held[0].settle(0, now_us=T0)
    await held[0].settle(0, now_us=T0)  # idempotent: frees one slot only
    assert (await limiter.admit(s, 0, now_us=T0)).allowed
    assert not (await limiter.admit(s, 0, now_us=T0)).allowed


async def test_burst(make) -> None:  # type: ignore[no-untyped-def]
    limiter = make(limits={"requests_per_minute": 60, "burst": 5})
    s = limiter.subject(P("k"))
    got = [(await limiter.admit(s, 0, now_us=T0)).allowed for _ in range(8)]
    assert got == [True] * 5 + [False] * 3
    refused = await limiter.admit(s, 0, now_us=T0)
    assert refused.limit == "burst" and refused.retry_after == 1.0
    assert (await limiter.admit(s, 0, now_us=T0 + US_PER_S)).allowed


async def test_tiers_and_count_by(make) -> None:  # type: ignore[no-untyped-def]
    limiter = make(
        count_by="user",
        limits={"requests_per_minute": 1},
        tiers=[{"name": "pro", "limits": {"requests_per_minute": 4}}],
    )
    pro = limiter.subject(P("alice", "jwt", "pro"))
    free = limiter.subject(P("bob", "jwt"))
    assert [(await limiter.admit(pro, 0, now_us=T0)).allowed for _ in range(5)].count(True) == 4
    assert [(await limiter.admit(free, 0, now_us=T0)).allowed for _ in range(5)].count(True) == 1


# --- Redis specifics ------------------------------------------------------------------------------


async def test_one_round_trip_per_request_one_at_a_time(server: RedisServer, client: Redis) -> None:
    # One request at a time: each settle rides with the next admission's script, and the last
    # leaves on its own after SETTLE_DEFER. Ten requests, eleven scripts (not twenty).
    limiter = build_limiter(
        cfg(requests_per_minute=100, tokens_per_minute=10_000, concurrency=1), files(server)
    )
    s = limiter.subject(P("k"))
    warm = await limiter.admit(s, 10)  # loads the script (NOSCRIPT -> SCRIPT LOAD) once
    await warm.settle(5)
    await asyncio.sleep(SETTLE_DEFER * 20)
    backend = limiter.backend
    assert isinstance(backend, ResilientRedisBackend) and backend.redis is not None
    redis_backend = backend.redis
    sent: list[str] = []
    command = redis_backend._command

    async def counting(*args: str | int) -> object:
        sent.append(str(args[0]))
        return await command(*args)

    redis_backend._command = counting  # type: ignore[method-assign]
    before = await client.info("commandstats")
    for _ in range(10):
        # concurrency=1: each admission is allowed only because the settle it carries frees the slot first.
        a = await limiter.admit(s, 10)
        assert a.allowed
        await a.settle(3)
    assert sent == ["EVALSHA"] * 10 and redis_backend.riding_settles == 1
    await asyncio.sleep(SETTLE_DEFER * 20)
    after = await client.info("commandstats")
    assert sent == ["EVALSHA"] * 11 and redis_backend.riding_settles == 0
    assert after["cmdstat_evalsha"]["calls"] - before["cmdstat_evalsha"]["calls"] == 11
    await limiter.aclose()


async def busy_with_another_admission(limiter: RateLimiter) -> asyncio.Task[object]:
    """An admission of another subject, sent and not yet answered: the connection is busy."""
    task: asyncio.Task[object] = asyncio.create_task(limiter.admit(limiter.subject(P("other")), 0))
    await asyncio.sleep(0)
    return task


async def test_a_settle_rides_with_the_next_admission(server: RedisServer, client: Redis) -> None:
    """While commands are in flight a settle waits for the next admission's script, which applies it first."""
    limiter = build_limiter(cfg(tokens_per_minute=1000, concurrency=1), files(server))
    backend = limiter.backend
    assert isinstance(backend, ResilientRedisBackend) and backend.redis is not None
    s = limiter.subject(P("k"))
    a = await limiter.admit(s, 600)  # loads the scripts
    assert a.allowed
    before = await client.info("commandstats")
    other = await busy_with_another_admission(limiter)
    assert await a.settle(100) == 500
    assert backend.redis.riding_settles == 1  # returned at once, not yet sent
    b = await limiter.admit(s, 100)
    # The slot was freed and 500 tokens refunded, in the admission's own script.
    assert b.allowed and b.headers["X-RateLimit-Remaining-Tokens"] == str(1000 - 100 - 100)
    assert backend.redis.riding_settles == 0
    await other
    after = await client.info("commandstats")
    assert after["cmdstat_evalsha"]["calls"] - before["cmdstat_evalsha"]["calls"] == 2  # other's and b's
    # With no admission coming, a riding settle leaves on its own within SETTLE_DEFER.
    other = await busy_with_another_admission(limiter)
    await b.settle(100)
    assert backend.redis.riding_settles == 1
    await other
    for _ in range(500):
        if await client.zcard(f"{limiter.key_for(s)}:c") == 0:
            break
        await asyncio.sleep(0.002)
    assert await client.zcard(f"{limiter.key_for(s)}:c") == 0
    await limiter.aclose()


async def test_a_riding_settle_lost_in_an_outage_is_replayed(server: RedisServer, client: Redis) -> None:
    limiter = build_limiter(cfg(tokens_per_minute=1000, concurrency=1), files(server))
    backend = limiter.backend
    assert isinstance(backend, ResilientRedisBackend) and backend.redis is not None
    s = limiter.subject(P("k"))
    a = await limiter.admit(s, 600)
    assert a.allowed
    other = await busy_with_another_admission(limiter)
    assert await a.settle(100) == 500
    assert backend.redis.riding_settles == 1
    await other
    server.stop()
    await wait_for(lambda: backend.pending_settles == 1, limit=10)  # its own script failed
    assert limiter.degraded
    server.start()  # empty: what the replay does to the counters is test_settles_during_an_outage_are_replayed's
    probe = await wait_recovered(limiter, s, tokens=1)
    await backend.flush_pending()
    assert backend.pending_settles == 0
    await probe.settle(1)
    b = await limiter.admit(s, 100)
    assert b.allowed and not b.degraded
    await limiter.aclose()


async def test_noscript_is_recovered(server: RedisServer, client: Redis) -> None:
    limiter = build_limiter(cfg(requests_per_minute=5), files(server))
    s = limiter.subject(P("k"))
    assert (await limiter.admit(s, 0)).allowed
    await client.script_flush()
    assert (await limiter.admit(s, 0)).allowed
    assert not limiter.degraded
    await limiter.aclose()


async def test_keys_expire(server: RedisServer, client: Redis) -> None:
    limiter = build_limiter(
        cfg(requests_per_minute=60, burst=3, tokens_per_minute=100, concurrency=2), files(server)
    )
    s = limiter.subject(P("k"))
    await limiter.admit(s, 10)
    keys = await client.keys("*")
    assert len(keys) == 4
    for key in keys:
        ttl = await client.pttl(key)
        assert 0 < ttl <= 901_000, key
    await limiter.aclose()


async def test_counters_survive_a_rebuild_and_edits_apply(server: RedisServer, client: Redis) -> None:
    first = build_limiter(cfg(requests_per_minute=3), files(server))
    s = first.subject(P("k"))
    assert [(await first.admit(s, 0)).allowed for _ in range(3)] == [True] * 3
    await first.aclose()
    # A new process (or a rebuilt limiter) sees the same usage; a raised limit applies at once.
    second = build_limiter(cfg(requests_per_minute=4), files(server))
    assert [(await second.admit(s, 0)).allowed for _ in range(2)] == [True, False]
    await second.reload(cfg(requests_per_minute=10), files(server))
    assert (await second.admit(s, 0)).allowed
    await second.aclose()


async def test_redis_time_is_used_without_a_pinned_clock(server: RedisServer, client: Redis) -> None:
    backend = RedisBackend(server.url)
    d = await backend.admit("t:{x}", LimitSpec(requests_per_minute=1), 0, "r")
    seconds, micros = await client.time()
    assert abs(d.now_us - (seconds * US_PER_S + micros)) < 60 * US_PER_S
    await backend.aclose()


async def wait_recovered(limiter: RateLimiter, s, tokens: int = 0):  # type: ignore[no-untyped-def]
    """Admit until the limiter probes Redis again and finds it (bounded; the probe interval is 0.5 s)."""
    for _ in range(100):
        a = await limiter.admit(s, tokens)
        if not limiter.degraded:
            return a
        await asyncio.sleep(0.05)
    raise AssertionError("limiter did not recover")


async def test_fail_open_falls_back_locally_and_recovers(server: RedisServer, client: Redis) -> None:
    limiter = build_limiter(cfg(requests_per_minute=2, concurrency=5), files(server))
    s = limiter.subject(P("k"))
    a = await limiter.admit(s, 0)
    assert a.allowed and not a.degraded and degraded_gauge() == 0
    server.stop()
    local = [await limiter.admit(s, 0) for _ in range(3)]
    assert limiter.degraded and degraded_gauge() == 1
    # The local limiter still enforces the policy, per replica.
    assert [x.allowed for x in local] == [True, True, False]
    assert all(x.degraded for x in local)
    assert local[2].status == 429
    await a.settle(0)  # a Redis admission settled during the outage: no error
    for x in local:
        await x.settle(0)
    server.start()
    back = await wait_recovered(limiter, s)
    assert back.allowed and not back.degraded and degraded_gauge() == 0
    await limiter.aclose()


async def test_fail_closed_refuses_with_503_and_recovers(server: RedisServer, client: Redis) -> None:
    limiter = build_limiter(cfg(on_unavailable="failClosed", requests_per_minute=100), files(server))
    s = limiter.subject(P("k"))
    assert (await limiter.admit(s, 0)).allowed
    server.stop()
    refused = await limiter.admit(s, 0)
    assert not refused.allowed and refused.status == 503 and refused.limit == "backend"
    assert refused.headers == {"Retry-After": "1"}
    assert degraded_gauge() == 1
    assert (await limiter.admit(s, 0)).status == 503  # no probe during the back-off either
    server.start()
    back = await wait_recovered(limiter, s)
    assert back.allowed and back.status == 200 and degraded_gauge() == 0
    await limiter.aclose()


async def test_settles_during_an_outage_are_replayed(server: RedisServer, client: Redis) -> None:
    """Redis keeps its data but refuses our connections; settles made meanwhile land on recovery."""
    limiter = build_limiter(cfg(tokens_per_minute=1000, concurrency=1), files(server))
    backend = limiter.backend
    assert isinstance(backend, ResilientRedisBackend)
    s = limiter.subject(P("k"))
    a = await limiter.admit(s, 600)
    assert a.allowed and not a.degraded
    admin_pw = "admin-pw"
    await client.acl_setuser(
        "admin", enabled=True, passwords=[f"+{admin_pw}"], keys=["*"], commands=["+@all"]
    )
    admin = Redis.from_url(server.url, username="admin", password=admin_pw)
    everything = {"keys": ["*"], "channels": ["*"], "commands": ["+@all"], "nopass": True}
    try:
        await admin.acl_setuser("default", enabled=False, **everything)  # type: ignore[arg-type]
        await admin.client_kill_filter(user="default")
        assert await a.settle(100) == 500  # the refund is computed locally and queued
        # The settle rides: its failure shows when it leaves on its own, SETTLE_DEFER later.
        await wait_for(lambda: limiter.degraded and backend.pending_settles == 1)
        local = await limiter.admit(s, 10)
        assert local.allowed and local.degraded
        await local.settle(10)
    finally:
        await admin.acl_setuser("default", enabled=True, reset=False, **everything)  # type: ignore[arg-type]
        await admin.aclose()  # type: ignore[attr-defined]
    await wait_recovered(limiter, s, tokens=1)
    await backend.flush_pending()
    assert backend.pending_settles == 0
    # The slot came back and 500 of the 600 reserved tokens were refunded in Redis.
    b = await limiter.admit(s, 100)
    assert b.allowed and not b.degraded
    remaining = int(b.headers["X-RateLimit-Remaining-Tokens"])
    assert remaining in (1000 - 100 - 100, 1000 - 100 - 100 - 1)  # the probe may have reserved 1 token
    await limiter.aclose()


async def wait_for(condition: Callable[[], bool], limit: float = 30.0) -> None:
    """Poll a condition that worker tasks change (bounded)."""
    for _ in range(int(limit / 0.002)):
        if condition():
            return
        await asyncio.sleep(0.002)
    raise AssertionError("condition not reached")


@pytest.mark.parametrize("mode", ["failOpen", "failClosed"])
async def test_redis_killed_under_load(server: RedisServer, client: Redis, mode: str) -> None:
    """Admissions keep flowing while Redis dies and comes back: no exception escapes, the
    answers during the outage follow the policy, and Redis serves again afterwards."""
    limiter = build_limiter(
        cfg(on_unavailable=mode, requests_per_minute=100_000, concurrency=50), files(server)
    )
    s = limiter.subject(P("k"))
    phase = "before"
    phases = ("before", "down", "recovering", "after")
    seen: dict[str, Counter[tuple[int, bool]]] = {p: Counter() for p in phases}
    go = asyncio.Event()
    go.set()
    busy = 0

    async def worker() -> None:
        nonlocal busy
        while phase != "stop":
            await go.wait()
            if phase == "stop":
                return
            busy += 1
            a = await limiter.admit(s, 0)
            seen[phase][(a.status, a.degraded)] += 1
            await asyncio.sleep(0)
            await a.settle(0)
            busy -= 1

    async def switch(to: str) -> None:
        # Quiesce, so every admission is counted in the phase it ran in.
        nonlocal phase
        go.clear()
        await wait_for(lambda: busy == 0)
        phase = to
        go.set()

    async def until(count: int) -> None:
        await wait_for(lambda: sum(seen[phase].values()) >= count)

    workers = [asyncio.create_task(worker()) for _ in range(20)]
    await until(200)
    go.clear()
    await wait_for(lambda: busy == 0)
    server.stop()
    await switch("down")
    await until(200)
    await switch("recovering")
    server.start()
    for _ in range(200):
        if not limiter.degraded:
            break
        await asyncio.sleep(0.05)
    await switch("after")
    await until(200)
    await switch("stop")
    await asyncio.gather(*workers)
    await limiter.aclose()
    assert set(seen["before"]) == {(200, False)}
    if mode == "failOpen":
        assert set(seen["down"]) == {(200, True)}  # served by the local limiter
    else:
        assert set(seen["down"]) == {(503, True)}
    assert set(seen["after"]) == {(200, False)}
    assert degraded_gauge() == 0


async def test_missing_redis_url_is_unavailable(server: RedisServer) -> None:
    limiter = build_limiter(cfg(on_unavailable="failClosed"), lambda name: None)
    assert (await limiter.admit(limiter.subject(P("k")), 0)).status == 503
    await limiter.aclose()
    opened = build_limiter(cfg(on_unavailable="failOpen"), lambda name: None)
    assert (await opened.admit(opened.subject(P("k")), 0)).allowed
    await opened.aclose()


async def test_reload_to_a_new_redis_url_swaps_backend(server: RedisServer, client: Redis) -> None:
    limiter = build_limiter(cfg(backend_type="memory"), files(server))
    before = limiter.backend
    await limiter.reload(cfg(backend_type="redis"), files(server))
    assert isinstance(limiter.backend, ResilientRedisBackend) and limiter.backend is not before
    assert (await limiter.admit(limiter.subject(P("k")), 0)).allowed
    assert await client.keys("*")
    await limiter.aclose()


# --- provider gate -------------------------------------------------------------------------------


def llm_config(rpm: int | None = None, tpm: int | None = None) -> LLMRuntimeConfig:
    limits = {"requests_per_minute": rpm, "tokens_per_minute": tpm}
    return LLMRuntimeConfig.model_validate(
        {
            "chain": [
                {
                    "id": "ns/capped",
                    "type": "openai",
                    "endpoint": "http://x/v1",
                    "model": "m",
                    "limits": limits,
                },
                {"id": "ns/free", "type": "openai", "endpoint": "http://y/v1", "model": "m"},
            ]
        }
    )


async def test_provider_gate_in_memory() -> None:
    gate = build_provider_gate(llm_config(rpm=2, tpm=1000), None, lambda n: None)
    assert [await gate.acquire("ns/capped", 100, now_us=T0) for _ in range(3)] == [True, True, False]
    assert all([await gate.acquire("ns/free", 10**6) for _ in range(10)])
    gate2 = ProviderGate({"p": LimitSpec(tokens_per_minute=500)})
    assert await gate2.acquire("p", 400, now_us=T0)
    assert not await gate2.acquire("p", 200, now_us=T0)
    assert REGISTRY.get_sample_value(
        "sentient_rate_limit_rejections_total", {"limit": "provider", "scope": "p"}
    )


async def test_provider_gate_shared_on_redis_across_agents(server: RedisServer, client: Redis) -> None:
    # Two agents (two gates, two pools) on the same Redis share the provider quota.
    a = build_provider_gate(llm_config(rpm=3), cfg(), files(server))
    b = build_provider_gate(llm_config(rpm=3), cfg(), files(server))
    got = [await a.acquire("ns/capped", 1), await b.acquire("ns/capped", 1)]
    got += [await a.acquire("ns/capped", 1), await b.acquire("ns/capped", 1)]
    assert got == [True, True, True, False]
    server.stop()
    assert await a.acquire("ns/capped", 1)  # fails open to local counters
    server.start()
    await a.aclose()
    await b.aclose()
