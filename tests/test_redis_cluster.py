"""Rate limits, provider quotas and sessions on a real three-master Redis Cluster.

The exactness of one budget across three processes is in ``test_limits_replicas.py`` (it runs
on standalone and on this Cluster); here: many subjects spread over every master and each
stays exact, scripts come back after SCRIPT FLUSH on every node, the provider gate and the
session store work through ``RedisCluster``, and a Cluster that loses a master degrades the
limiter the way the policy says.
"""

from __future__ import annotations

import asyncio
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import redis

from agent_runtime.config import LLMRuntimeConfig, RateLimitConfig, SessionsRuntimeConfig
from agent_runtime.limits import build_limiter
from agent_runtime.limits.provider_gate import build_provider_gate
from agent_runtime.sessions import OwnedSessions, RedisSessionStore, Turn, build_session_store
from agent_runtime.testing import FakeUpstream
from tests.support.redis_cluster import RedisClusterSetup, redis_cluster_or_skip
from tests.support.redis_server import RedisUnavailable
from tests.support.runtime import DEFAULT_KEYS, chain_entry, default_credentials, fire_chats, runtime_fleet

KEY = DEFAULT_KEYS["alice"][0]


@dataclass(frozen=True)
class Caller:
    id: str
    kind: str = "apiKey"
    tier: str | None = None


@pytest.fixture(scope="module")
def cluster() -> Iterator[RedisClusterSetup]:
    with redis_cluster_or_skip() as setup:
        yield setup


def cluster_backend(cluster: RedisClusterSetup, **extra: Any) -> dict[str, Any]:
    return {"type": "redis", "redis": {"mode": "cluster", "nodes": cluster.nodes, **extra}}


def policy(cluster: RedisClusterSetup, rpm: int, on_unavailable: str = "failOpen") -> RateLimitConfig:
    return RateLimitConfig.model_validate(
        {
            "policy": "ns/cluster",
            "limits": {"requests_per_minute": rpm},
            "backend": cluster_backend(cluster),
            "on_redis_unavailable": on_unavailable,
        }
    )


async def test_many_subjects_spread_over_every_master_each_exact(cluster: RedisClusterSetup) -> None:
    cluster.flushall()
    # Two limiters: two replicas of one agent, each with its own RedisCluster client.
    limiters = [build_limiter(policy(cluster, 5), lambda _: None) for _ in range(2)]
    subjects = [limiters[0].subject(Caller(f"key-{i}")) for i in range(30)]
    admissions = await asyncio.gather(
        *(limiter.admit(subject, 0) for subject in subjects for limiter in limiters for _ in range(5))
    )
    for index, subject in enumerate(subjects):
        mine = admissions[index * 10 : (index + 1) * 10]
        assert sum(a.allowed for a in mine) == 5, subject
        assert {a.status for a in mine if not a.allowed} == {429}
    assert not any(a.degraded for a in admissions)
    per_node = cluster.keys_per_node()
    print(f"\nlimiter keys per master: {per_node}")
    assert all(count > 0 for count in per_node.values())
    for limiter in limiters:
        await limiter.aclose()


async def test_scripts_are_loaded_again_after_script_flush(cluster: RedisClusterSetup) -> None:
    cluster.flushall()
    limiter = build_limiter(policy(cluster, 3), lambda _: None)
    subject = limiter.subject(Caller("flush"))
    assert (await limiter.admit(subject, 0)).allowed
    for server in cluster.servers:
        with redis.Redis(port=server.port) as client:
            client.script_flush()
    results = await asyncio.gather(*(limiter.admit(subject, 0) for _ in range(5)))
    assert [a.allowed for a in results].count(True) == 2
    assert not limiter.degraded
    await limiter.aclose()


async def test_concurrency_and_tokens_settle_on_the_cluster(cluster: RedisClusterSetup) -> None:
    cluster.flushall()
    config = RateLimitConfig.model_validate(
        {
            "policy": "ns/conc",
            "limits": {"tokens_per_minute": 1000, "concurrency": 1},
            "backend": cluster_backend(cluster),
        }
    )
    limiter = build_limiter(config, lambda _: None)
    subject = limiter.subject(Caller("conc"))
    first = await limiter.admit(subject, 600)
    assert first.allowed
    second = await limiter.admit(subject, 10)
    assert not second.allowed and second.limit == "concurrency"
    assert await first.settle(100) == 500
    third = await limiter.admit(subject, 800)
    assert third.allowed and third.headers["X-RateLimit-Remaining-Tokens"] == "100"
    await third.settle(800)
    await limiter.aclose()


async def test_provider_gate_shares_the_quota_through_the_cluster(cluster: RedisClusterSetup) -> None:
    cluster.flushall()
    llm = LLMRuntimeConfig.model_validate(
        {
            "chain": [
                {
                    "id": "ns/p",
                    "type": "openai-compatible",
                    "endpoint": "http://127.0.0.1:1/v1",
                    "model": "m",
                    "limits": {"requests_per_minute": 4},
                }
            ]
        }
    )
    gates = [build_provider_gate(llm, policy(cluster, 100), lambda _: None) for _ in range(2)]
    results = await asyncio.gather(*(gate.acquire("ns/p", 0) for gate in gates for _ in range(4)))
    assert results.count(True) == 4
    for gate in gates:
        await gate.aclose()


async def test_sessions_on_the_cluster(cluster: RedisClusterSetup) -> None:
    cluster.flushall()
    config = SessionsRuntimeConfig.model_validate(
        {"store": "redis", "max_turns": 3, "redis": {"mode": "cluster", "nodes": cluster.nodes}}
    )
    store = build_session_store(config, lambda _: None, "agent")
    other = build_session_store(config, lambda _: None, "agent")
    assert isinstance(store, RedisSessionStore)
    alice = OwnedSessions(store, "apiKey", "alice")
    # A burst of first commands on a fresh client (the cold start of a replica).
    await asyncio.gather(*(alice.append(f"s{i}", [Turn("user", f"hi {i}")]) for i in range(50)))
    await alice.append("s0", [Turn("assistant", "a"), Turn("user", "b"), Turn("assistant", "c")])
    assert [t.content for t in await OwnedSessions(other, "apiKey", "alice").get("s0")] == ["a", "b", "c"]
    assert await OwnedSessions(other, "apiKey", "mallory").get("s0") == []
    assert all(count > 0 for count in cluster.keys_per_node().values())
    await store.aclose()
    await other.aclose()


@pytest.mark.parametrize("on_unavailable", ["failOpen", "failClosed"])
async def test_a_cluster_that_cannot_answer_degrades_as_the_policy_says(on_unavailable: str) -> None:
    # Seeds where nothing listens: the client cannot learn the slot map at all.
    config = RateLimitConfig.model_validate(
        {
            "policy": "ns/down",
            "limits": {"requests_per_minute": 2},
            "backend": {"type": "redis", "redis": {"mode": "cluster", "nodes": ["127.0.0.1:1"]}},
            "on_redis_unavailable": on_unavailable,
        }
    )
    limiter = build_limiter(config, lambda _: None)
    admission = await limiter.admit(limiter.subject(Caller("down")), 0)
    assert limiter.degraded
    if on_unavailable == "failOpen":
        assert admission.allowed and admission.degraded
    else:
        assert not admission.allowed and admission.status == 503 and admission.limit == "backend"
    await limiter.aclose()


@pytest.mark.slow
def test_exactly_the_budget_over_http_across_three_runtime_processes(
    tmp_path: Path, cluster: RedisClusterSetup
) -> None:
    """Three ``python -m agent_runtime`` processes, limits and sessions on the Cluster."""
    cluster.flushall()
    connection = {"mode": "cluster", "nodes": cluster.nodes}
    rate_limit = {
        "policy": "default/cluster-http",
        "limits": {"requestsPerMinute": 60},
        "backend": {"type": "redis", "redis": connection},
        "onRedisUnavailable": "failClosed",
    }
    sessions = {"store": "redis", "redis": connection}
    with FakeUpstream("openai") as fake:
        config = {"chain": [chain_entry(fake)], "rate_limit": rate_limit, "sessions": sessions}
        with runtime_fleet(tmp_path, 3, default_credentials(), **config) as runtimes:
            responses = asyncio.run(fire_chats([runtime.url for runtime in runtimes], 300, KEY))
        statuses = Counter(r.status_code for r in responses)
        upstream_requests = fake.state.requests
    print(f"\nHTTP on the Cluster: {dict(statuses)}; upstream saw {upstream_requests} requests")
    assert statuses == {200: 60, 429: 240}
    assert upstream_requests == 60
    remaining = sorted(int(r.headers["RateLimit-Remaining"]) for r in responses if r.status_code == 200)
    assert remaining == list(range(60))


async def test_a_cluster_with_tls_and_a_password() -> None:
    """TLS only (plain port off) and requirepass: the CA and the password come from files."""
    password = "cluster-test-password"
    try:
        setup = RedisClusterSetup(password=password, tls=True)
    except RedisUnavailable as exc:
        pytest.skip(str(exc))
    with setup:
        files = {"ratelimit-redis-password": password + "\n", "ratelimit-redis-ca.pem": setup.ca_pem or ""}
        redis = {
            "mode": "cluster",
            "nodes": setup.nodes,
            "password_file": "ratelimit-redis-password",
            "tls": {"enabled": True, "ca_file": "ratelimit-redis-ca.pem"},
        }
        config = RateLimitConfig.model_validate(
            {
                "policy": "ns/tls",
                "limits": {"requests_per_minute": 2},
                "backend": {"type": "redis", "redis": redis},
                "on_redis_unavailable": "failClosed",
            }
        )
        limiter = build_limiter(config, files.get)
        subject = limiter.subject(Caller("tls"))
        assert [(await limiter.admit(subject, 0)).status for _ in range(3)] == [200, 200, 429]
        await limiter.aclose()
        # Without TLS (or without the password) nothing answers: failClosed refuses with 503.
        for broken in ({**redis, "tls": {"enabled": False}}, {**redis, "password_file": None}):
            other = build_limiter(
                RateLimitConfig.model_validate(
                    {**config.model_dump(), "backend": {"type": "redis", "redis": broken}}
                ),
                files.get,
            )
            admission = await other.admit(subject, 0)
            assert admission.status == 503 and other.degraded
            await other.aclose()


@pytest.mark.parametrize("count_by", ["apiKey", "user", "session", "agent"])
def test_every_key_of_one_admission_is_in_one_slot(count_by: str) -> None:
    """Checked offline with redis-py's own slot function, for every kind of subject."""
    from redis.crc import key_slot

    from agent_runtime.limits.provider_gate import ProviderGate
    from agent_runtime.limits.redis import window_keys

    config = RateLimitConfig.model_validate(
        {
            "policy": "team-a/gold.tier",
            "count_by": count_by,
            "limits": {"requests_per_minute": 1},
            "backend": {"type": "redis", "redis_url_file": "url", "key_prefix": "prod:eu-1:rl:"},
        }
    )
    limiter = build_limiter(config, lambda _: None)
    for caller in (Caller("key-1"), Caller("sub|with:odd/chars", kind="jwt"), None):
        keys = window_keys(limiter.key_for(limiter.subject(caller, "session-ü{}")))
        assert len({key_slot(k.encode()) for k in keys}) == 1, keys
    gate_keys = window_keys(ProviderGate({}, key_prefix="prod:eu-1:rl:").key_for("team-a/openai"))
    assert len({key_slot(k.encode()) for k in gate_keys}) == 1
