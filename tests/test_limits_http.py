"""Rate limiting through the real runtime over HTTP, with a real redis-server and a fake upstream.

- exactness: three ``python -m agent_runtime`` processes share one Redis; 600 concurrent
  requests from one API key, spread round-robin, against 60 requests per minute: exactly 60
  answered 200, the rest 429 with Retry-After, and the upstream saw exactly 60 requests;
- token budget: a request whose reservation would overrun the budget is refused before it
  reaches the upstream (the upstream counts what it received), and settle gives unused tokens back;
- Redis killed under a failClosed policy: 503 with Retry-After, then service again when it returns.
"""

from __future__ import annotations

import asyncio
import functools
import threading
import time
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from agent_runtime.config import RATE_LIMIT_REDIS_URL_FILE
from agent_runtime.testing import FakeUpstream, wait_until
from tests.support.redis_server import RedisServer, redis_or_skip
from tests.support.runtime import (
    InProcessRuntime,
    RuntimeFiles,
    chain_entry,
    default_credentials,
    fire_chats,
    make_config,
    runtime_fleet,
)

KEY = "alice-secret-key"
pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def redis_server() -> Iterator[RedisServer]:
    with redis_or_skip() as server:
        yield server


def policy(limits: dict[str, int], *, redis: bool = True, on_unavailable: str = "failOpen") -> dict[str, Any]:
    backend: dict[str, Any] = {"type": "memory"}
    if redis:
        backend = {"type": "redis", "redisUrlFile": RATE_LIMIT_REDIS_URL_FILE}
    return {
        "policy": "default/http-test",
        "limits": limits,
        "countBy": "apiKey",
        "backend": backend,
        "onRedisUnavailable": on_unavailable,
    }


def redis_credentials(server: RedisServer, *, flush: bool = False) -> dict[str, str]:
    """Bound-Secret files naming the test Redis; ``flush`` empties it first, so no counter of an
    earlier test (the server is shared by the module) counts against this one."""
    if flush:
        import redis

        redis.Redis.from_url(server.url).flushall()
    return default_credentials({RATE_LIMIT_REDIS_URL_FILE: server.url})


def wait_settled(server: RedisServer, timeout: float = 5.0) -> None:
    """Until no admission holds a lease (a lease set is deleted with its last member): the settle
    follows the answer, so a client that asks again at once can overtake its own refund."""
    import redis

    client = redis.Redis.from_url(server.url)
    deadline = time.monotonic() + timeout
    try:
        while any(client.zcard(key) for key in client.scan_iter(match="*:c")):
            assert time.monotonic() < deadline, "a lease was never settled"
            time.sleep(0.005)
    finally:
        client.close()


def chat(content: str = "hello", max_tokens: int | None = None) -> dict[str, Any]:
    body: dict[str, Any] = {"model": "fake-model", "messages": [{"role": "user", "content": content}]}
    if max_tokens is not None:
        body["max_tokens"] = max_tokens
    return body


def _limit_is(runtime: InProcessRuntime, rpm: int) -> bool:
    rate_limit = runtime.runtime.state.config.rate_limit
    return rate_limit is not None and rate_limit.limits.requests_per_minute == rpm


def test_exactly_60_of_600_across_three_runtime_processes(tmp_path: Path, redis_server: RedisServer) -> None:
    credentials = redis_credentials(redis_server, flush=True)
    with FakeUpstream("openai") as fake:
        config = {"chain": [chain_entry(fake)], "rate_limit": policy({"requestsPerMinute": 60})}
        with runtime_fleet(tmp_path, 3, credentials, **config) as runtimes:
            responses = asyncio.run(fire_chats([runtime.url for runtime in runtimes], 600, KEY))
        statuses = Counter(r.status_code for r in responses)
        upstream_requests = fake.state.requests
    print(f"\nHTTP exactness: {dict(statuses)}; upstream saw {upstream_requests} requests")
    assert statuses == {200: 60, 429: 540}
    assert upstream_requests == 60
    by_runtime = Counter(i % 3 for i, r in enumerate(responses) if r.status_code == 200)
    assert sum(by_runtime.values()) == 60
    for r in responses:
        if r.status_code == 429:
            retry = int(r.headers["Retry-After"])
            assert 1 <= retry <= 61
            assert r.headers["RateLimit-Limit"] == "60"
            assert r.headers["RateLimit-Remaining"] == "0"
            assert r.headers["RateLimit-Reset"] == r.headers["Retry-After"]
    remaining = sorted(int(r.headers["RateLimit-Remaining"]) for r in responses if r.status_code == 200)
    assert remaining == list(range(60))


@pytest.mark.parametrize("use_redis", [False, True], ids=["memory", "redis"])
def test_token_budget_refuses_before_the_upstream(
    tmp_path: Path, redis_server: RedisServer, use_redis: bool
) -> None:
    credentials = redis_credentials(redis_server, flush=True)
    with FakeUpstream("openai", tokens=5) as fake:
        config = make_config(
            chain=[chain_entry(fake)], rate_limit=policy({"tokensPerMinute": 1000}, redis=use_redis)
        )
        with (
            InProcessRuntime(RuntimeFiles(tmp_path, config, credentials)) as runtime,
            httpx.Client(base_url=runtime.url, headers={"x-api-key": KEY}, timeout=30) as client,
        ):
            # A reservation above the whole budget never reaches the upstream.
            too_big = client.post("/v1/chat/completions", json=chat(max_tokens=2000))
            assert too_big.status_code == 429
            assert too_big.json()["error"]["code"] == "tokens"
            assert fake.state.requests == 0
            first = client.post("/v1/chat/completions", json=chat(max_tokens=600))
            assert first.status_code == 200
            assert fake.state.requests == 1
            # Settled: the first used a few tokens of its 600+ reservation; the rest came back.
            left = int(first.headers.get("X-RateLimit-Remaining-Tokens", "0"))
            assert left < 400
            if use_redis:
                wait_settled(redis_server)
            second = client.post("/v1/chat/completions", json=chat(max_tokens=600))
            assert second.status_code == 200, second.text
            assert fake.state.requests == 2
            # Fits the budget on its own, not on top of what the first two really used: refused,
            # and the refusal costs the upstream nothing.
            prompt_estimate = 1000 - 600 - left  # what the runtime reserved for the prompt
            third = client.post("/v1/chat/completions", json=chat(max_tokens=1000 - prompt_estimate))
            assert third.status_code == 429
            assert third.json()["error"]["code"] == "tokens"
            assert 1 <= int(third.headers["Retry-After"]) <= 61
            assert fake.state.requests == 2


def test_redis_killed_fail_closed_then_recovers(tmp_path: Path, redis_server: RedisServer) -> None:
    credentials = redis_credentials(redis_server)
    with FakeUpstream("openai", tokens=3) as fake:
        config = make_config(
            chain=[chain_entry(fake)],
            rate_limit=policy({"requestsPerMinute": 1000}, on_unavailable="failClosed"),
        )
        with (
            InProcessRuntime(RuntimeFiles(tmp_path, config, credentials)) as runtime,
            httpx.Client(base_url=runtime.url, headers={"x-api-key": KEY}, timeout=30) as client,
        ):
            assert client.post("/v1/chat/completions", json=chat()).status_code == 200
            redis_server.stop()
            try:
                before = fake.state.requests
                down = client.post("/v1/chat/completions", json=chat())
                assert down.status_code == 503
                assert down.headers["Retry-After"] == "1"
                assert fake.state.requests == before
            finally:
                redis_server.start()
            assert wait_until(
                lambda: client.post("/v1/chat/completions", json=chat()).status_code == 200, timeout=30
            )


def test_concurrency_cap_over_http(tmp_path: Path, redis_server: RedisServer) -> None:
    credentials = redis_credentials(redis_server)
    # 40 words at 50 ms: the first stream is still running when the second request comes.
    with FakeUpstream("openai", latency=0.05, tokens=40) as fake:
        config = make_config(chain=[chain_entry(fake)], rate_limit=policy({"concurrency": 1}))
        with InProcessRuntime(RuntimeFiles(tmp_path, config, credentials)) as runtime:
            headers = {"x-api-key": KEY}
            result: dict[str, int] = {}

            def stream() -> None:
                body = {**chat("long answer"), "stream": True}
                with httpx.stream(
                    "POST", f"{runtime.url}/v1/chat/completions", json=body, headers=headers, timeout=60
                ) as response:
                    for _ in response.iter_bytes():
                        pass
                    result["status"] = response.status_code

            holder = threading.Thread(target=stream)
            holder.start()
            assert wait_until(lambda: fake.state.streams_started == 1, timeout=30)
            second = httpx.post(
                f"{runtime.url}/v1/chat/completions", json=chat(), headers=headers, timeout=30
            )
            assert second.status_code == 429
            assert second.json()["error"]["code"] == "concurrency"
            assert second.headers["Retry-After"] == "1"
            holder.join(60)
            assert result["status"] == 200
            # The slot came back when the stream ended.
            third = httpx.post(f"{runtime.url}/v1/chat/completions", json=chat(), headers=headers, timeout=30)
            assert third.status_code == 200


def test_provider_quota_fails_over_and_is_shared_across_agents(
    tmp_path: Path, redis_server: RedisServer
) -> None:
    credentials = redis_credentials(redis_server, flush=True)
    with FakeUpstream("openai", tokens=3) as capped, FakeUpstream("openai", tokens=3) as spare:
        chain = [
            chain_entry(capped, "default/capped", limits={"requestsPerMinute": 2}),
            chain_entry(spare, "default/spare"),
        ]
        config = make_config(chain=chain, rate_limit=policy({"requestsPerMinute": 1000}))
        with (
            InProcessRuntime(RuntimeFiles(tmp_path / "a", config, credentials)) as agent_a,
            InProcessRuntime(RuntimeFiles(tmp_path / "b", config, credentials)) as agent_b,
        ):
            for url in (agent_a.url, agent_b.url, agent_a.url, agent_b.url):
                response = httpx.post(f"{url}/v1/chat/completions", json=chat(), headers={"x-api-key": KEY})
                assert response.status_code == 200
    # Two agents, one quota of 2 on the capped provider: the other two requests failed over.
    assert capped.state.requests == 2
    assert spare.state.requests == 2


@pytest.mark.parametrize("use_redis", [False, True], ids=["memory", "redis"])
def test_policy_edit_applies_by_hot_reload(
    tmp_path: Path, redis_server: RedisServer, use_redis: bool
) -> None:
    credentials = redis_credentials(redis_server, flush=True)
    with FakeUpstream("openai", tokens=3) as fake:
        config = make_config(
            chain=[chain_entry(fake)], rate_limit=policy({"requestsPerMinute": 2}, redis=use_redis)
        )
        files = RuntimeFiles(tmp_path, config, credentials)
        with (
            InProcessRuntime(files) as runtime,
            httpx.Client(base_url=runtime.url, headers={"x-api-key": KEY}, timeout=30) as client,
        ):
            assert [client.post("/v1/chat/completions", json=chat()).status_code for _ in range(3)] == [
                200,
                200,
                429,
            ]
            # Raised to 4: the two already counted still count, so exactly two more pass.
            files.update_config(
                make_config(
                    chain=[chain_entry(fake)], rate_limit=policy({"requestsPerMinute": 4}, redis=use_redis)
                )
            )
            assert wait_until(functools.partial(_limit_is, runtime, 4))
            assert [client.post("/v1/chat/completions", json=chat()).status_code for _ in range(3)] == [
                200,
                200,
                429,
            ]
            assert fake.state.requests == 4
