"""Spend budgets through the real runtime: three ``python -m agent_runtime`` processes, one budget.

Each process is a real HTTP server; the budget's totals live in a real redis-server (and, the
same test again, in a real three-master Redis Cluster: the keys are hash-tagged). 300 concurrent
chat completions from one key, spread round-robin, against a budget that holds about 45 answers:

- the total in Redis is exactly the sum of what the answered requests cost, computed here from
  the usage each response reports and the model's price (integer micro-units, one rounding up
  per answer);
- it never passes the limit: overspend is at most one request's reserved cost, and here zero,
  since no answer used more than its reservation;
- refused requests never reach the upstream, and are 429s in OpenAI's error shape naming the
  budget; a sequential fill afterwards is refused exactly when the next worst case would not fit.
"""

from __future__ import annotations

import asyncio
import functools
import time
from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest

from agent_runtime.config import RATE_LIMIT_REDIS_URL_FILE
from agent_runtime.limits.budgets import Calendar
from agent_runtime.limits.policy import estimate_tokens
from agent_runtime.spend import Price, parse_amount
from agent_runtime.testing import FakeUpstream, wait_until
from tests.support.redis_cluster import redis_cluster_or_skip
from tests.support.redis_server import redis_or_skip
from tests.support.runtime import chain_entry, default_credentials, fire_chats, runtime_fleet

pytestmark = pytest.mark.slow

KEY = "alice-secret-key"
PRICE = {"currency": "USD", "inputPerMillion": "0.15", "outputPerMillion": "0.60"}
LIMIT = "0.003"
MAX_TOKENS = 100
SYSTEM = "You are a test agent."


@dataclass(frozen=True)
class Store:
    """How the runtimes reach Redis, and how the test reads a key."""

    name: str
    backend: dict[str, Any]
    credentials: dict[str, str]
    get: Callable[[str], int]


@pytest.fixture(scope="module", params=["standalone", "cluster"])
def store(request: pytest.FixtureRequest) -> Iterator[Store]:
    import redis

    if request.param == "standalone":
        with redis_or_skip() as server:
            client = redis.Redis.from_url(server.url)
            client.flushall()
            yield Store(
                "standalone",
                {"type": "redis", "redisUrlFile": RATE_LIMIT_REDIS_URL_FILE},
                {RATE_LIMIT_REDIS_URL_FILE: server.url},
                lambda key: int(client.get(key) or 0),
            )
            client.close()
    else:
        with redis_cluster_or_skip() as cluster:
            cluster.flushall()
            host, port = cluster.nodes[0].rsplit(":", 1)
            cluster_client: redis.RedisCluster = redis.RedisCluster(host=host, port=int(port))
            yield Store(
                "cluster",
                {"type": "redis", "redis": {"mode": "cluster", "nodes": cluster.nodes}},
                {},
                lambda key: int(cluster_client.get(key) or 0),
            )
            cluster_client.close()


def _reservation(price: Price, content: str) -> int:
    """What the runtime reserves for one request: the prompt estimate and the output cap, priced."""
    messages = [{"content": SYSTEM}, {"content": content}]
    prompt = estimate_tokens(messages, MAX_TOKENS) - MAX_TOKENS
    return price.cost(prompt, MAX_TOKENS)


def _holds(store: Store, key: str, total: int) -> bool:
    return store.get(key) == total


def _cost(price: Price, response: httpx.Response) -> int:
    """What an answer cost, from the usage it reports."""
    usage = response.json()["usage"]
    return price.cost(usage["prompt_tokens"], usage["completion_tokens"])


def test_one_budget_across_three_runtime_processes(tmp_path: Path, store: Store) -> None:
    price = Price("USD", parse_amount(PRICE["inputPerMillion"]), parse_amount(PRICE["outputPerMillion"]))
    limit = parse_amount(LIMIT)
    rate_limit = {
        "policy": "default/spend",
        "limits": {},
        "backend": store.backend,
        "onRedisUnavailable": "failClosed",
        "budgets": [{"name": "team", "per": "agent", "currency": "USD", "perDay": LIMIT}],
    }
    # Every answer is exactly MAX_TOKENS long and takes about 0.2 s, so reservations overlap.
    with FakeUpstream("openai", tokens=MAX_TOKENS, latency=0.002) as fake:
        config = {
            "chain": [chain_entry(fake, price=PRICE)],
            "rate_limit": rate_limit,
            "llm": {"parameters": {"maxTokens": MAX_TOKENS}},
            "system_prompt": SYSTEM,
        }
        credentials = default_credentials(store.credentials)
        with runtime_fleet(tmp_path, 3, credentials, **config) as runtimes:
            urls = [r.url for r in runtimes]
            day = Calendar.at(time.time_ns() // 1000).day
            responses = asyncio.run(fire_chats(urls, 300, KEY))
            key = f"sentient:rl:{{default/spend|$spend}}team|agent:test-agent:d:{day}"
            # A request settles just after its response is sent: wait for the last settles to land.
            cost = sum(_cost(price, r) for r in responses if r.status_code == 200)
            assert wait_until(functools.partial(_holds, store, key, cost), timeout=10), (store.get(key), cost)
            after_wave = cost
            # Then one at a time until the budget refuses: it refuses exactly when the next
            # worst case no longer fits.
            fill: list[httpx.Response] = []
            with httpx.Client(timeout=30, headers={"x-api-key": KEY}) as client:
                for i in range(100):
                    body = {"model": "fake-model", "messages": [{"role": "user", "content": f"request {i}"}]}
                    answer = client.post(f"{urls[i % 3]}/v1/chat/completions", json=body)
                    fill.append(answer)
                    if answer.status_code != 200:
                        break
                    cost += _cost(price, answer)
                    assert wait_until(functools.partial(_holds, store, key, cost), timeout=10)
                last_reserve = _reservation(price, f"request {len(fill) - 1}")
            final = store.get(key)
            # Every process's metrics: the gauges appear where a request was answered or refused,
            # and the three processes share the wave unevenly.
            metrics = "".join(
                httpx.get(f"http://127.0.0.1:{runtime.files.config.server.metrics_port}/metrics").text
                for runtime in runtimes
            )
        upstream_requests = fake.state.requests

    statuses = Counter(r.status_code for r in responses)
    answered = [r for r in [*responses, *fill] if r.status_code == 200]
    cost = sum(_cost(price, r) for r in answered)
    largest = max(_reservation(price, f"request {i}") for i in range(300))
    print(
        f"\nspend budget on {store.name}: wave {dict(statuses)}, spent {after_wave} of {limit} micro-USD after it; "
        f"{len(fill) - 1} more answered one by one, final {final}; largest reservation {largest}"
    )
    assert set(statuses) == {200, 429}
    # Exact: the store holds what the answers cost, to the micro-unit.
    assert final == cost
    # Overspend at most one request's reserved cost (zero here: no answer used more than reserved).
    assert final <= limit + largest
    assert final <= limit
    # The fill stopped on a budget refusal that was exact: the next worst case did not fit.
    assert fill[-1].status_code == 429
    assert final + last_reserve > limit
    assert upstream_requests == len(answered)
    for refused in [r for r in responses if r.status_code == 429] + fill[-1:]:
        error = refused.json()["error"]
        assert error["code"] == "spend_day" and error["type"] == "rate_limit_exceeded"
        assert "'team'" in error["message"] and "UTC" in error["message"]
        assert int(refused.headers["Retry-After"]) >= 1
    assert 'sentient_budget_spent{budget="team",subject="test-agent",window="day"}' in metrics
    assert 'sentient_budget_limit{budget="team",currency="USD",window="day"} 0.003' in metrics
