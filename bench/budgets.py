"""Spend budget benchmark: what reserving and settling a request's budgets costs, memory vs Redis.

One process, one event loop, sequential requests (so the figure is the cost of one request's
bookkeeping, not of a queue): each request reserves its worst case on two budgets (one per API
key over 100 keys, one for the whole agent; a day and a month window each) and settles to a
real cost, as the runtime does around every upstream call. Beside it, the token limit's own
admit + settle on the same backend, for scale. Redis is a real redis-server on loopback,
started here.

    PYTHONPATH=operator:. python bench/budgets.py [--n 3000]
"""

from __future__ import annotations

import argparse
import asyncio
import os
import sys
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path

sys.path[:0] = [
    str(Path(__file__).resolve().parents[1]),
    str(Path(__file__).resolve().parents[1] / "operator"),
]

from agent_runtime.config import ProviderConfig, RateLimitConfig  # noqa: E402
from agent_runtime.limits import build_limiter  # noqa: E402
from agent_runtime.limits.policy import ALLOW_ALL, RateLimiter  # noqa: E402
from agent_runtime.spend import CURRENT_METER, Price, record  # noqa: E402

CHAIN = [
    ProviderConfig.model_validate(
        {
            "id": "bench/p",
            "type": "openai",
            "endpoint": "http://127.0.0.1:9/v1",
            "model": "m",
            "price": {"inputPerMillion": "2.50", "outputPerMillion": "10.00"},
        }
    )
]
PRICE = Price("USD", 2_500_000, 10_000_000)
BUDGETS = [
    {"name": "per-key", "per": "apiKey", "perDay": "1000000", "perMonth": "10000000"},
    {"name": "agent", "per": "agent", "perDay": "1000000", "perMonth": "10000000"},
]


@dataclass(frozen=True)
class Caller:
    """An API-key caller."""

    id: str
    kind: str = "apiKey"
    tier: str | None = None


CALLERS = [Caller(f"key-{i}") for i in range(100)]


def _config(backend: str, *, budgets: bool) -> RateLimitConfig:
    return RateLimitConfig.model_validate(
        {
            "policy": "bench/spend",
            "limits": {} if budgets else {"tokens_per_minute": 10**10},
            "backend": {"type": backend, **({"redis_url_file": "url"} if backend == "redis" else {})},
            "budgets": BUDGETS if budgets else [],
        }
    )


async def _spend(limiter: RateLimiter, i: int) -> None:
    admission = await limiter.admit_spend(ALLOW_ALL, CALLERS[i % len(CALLERS)], CHAIN, 40, 512)
    assert admission.allowed and admission.spend is not None
    token = CURRENT_METER.set(admission.spend.meter)
    record(PRICE, 30, 200)
    CURRENT_METER.reset(token)
    await admission.settle(230)


async def _tokens(limiter: RateLimiter, i: int) -> None:
    admission = await limiter.admit(limiter.subject(CALLERS[i % len(CALLERS)]), 552)
    assert admission.allowed
    await admission.settle(230)


async def _measure(limiter: RateLimiter, step: Callable[[RateLimiter, int], Awaitable[None]], n: int) -> str:
    for i in range(200):
        await step(limiter, i)
    wall, cpu = time.perf_counter(), time.process_time()
    for i in range(n):
        await step(limiter, i)
    wall, cpu = time.perf_counter() - wall, time.process_time() - cpu
    await limiter.aclose()
    return f"{wall / n * 1e6:9.0f} us wall {cpu / n * 1e6:7.0f} us CPU per request"


async def _run(n: int, redis_url: str) -> None:
    files = {"url": redis_url}.get
    for backend in ("memory", "redis"):
        budgets = build_limiter(_config(backend, budgets=True), files)
        tokens = build_limiter(_config(backend, budgets=False), files)
        print(f"{backend:<6} spend budgets (2 budgets x 2 windows): {await _measure(budgets, _spend, n)}")
        print(f"{backend:<6} token limit alone, for scale:        {await _measure(tokens, _tokens, n)}")


def main() -> None:
    """Start a redis-server and print the figures."""
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--n", type=int, default=3000, help="measured requests per row")
    args = parser.parse_args()
    from tests.support.redis_server import RedisServer

    print(f"loadavg: {os.getloadavg()[0]:.2f} (the machine may be shared; figures are noisy)")
    with RedisServer() as server:
        asyncio.run(_run(args.n, server.url))


if __name__ == "__main__":
    main()
