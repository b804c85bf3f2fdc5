"""Spend budgets on Redis behind Sentinel, and with Redis unreachable (``onRedisUnavailable``).

- Sentinel (one master, one replica, three Sentinels, password on): two limiters, as two
  replicas would, reserve 200 worst cases at once against one agent budget that holds 50 of
  them: exactly 50 are admitted; settles give the unused part back on the master.
- Unreachable Redis: failClosed refuses with 503 (``backend``) before any upstream call;
  failOpen counts in the replica's own memory.
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterator

import pytest

from agent_runtime.config import RateLimitConfig
from agent_runtime.limits import build_limiter
from agent_runtime.limits.policy import ALLOW_ALL
from tests.support.failover_load import PASSWORD_FILE, sentinel_policy
from tests.support.net import free_port
from tests.support.redis_cluster import RedisSentinelSetup, redis_sentinel_or_skip
from tests.support.spend import Caller, priced_chain

PASSWORD = "sentinel-test-password"
# 1000 output tokens at 1.00 per million: 0.001 (1000 micro-USD) per worst case.
CHAIN = priced_chain("1", "1")
BUDGET = {"name": "agent", "per": "agent", "perDay": "0.05"}


@pytest.fixture
def sentinel_setup() -> Iterator[RedisSentinelSetup]:
    with redis_sentinel_or_skip(PASSWORD) as setup:
        yield setup


def files(name: str) -> str | None:
    return PASSWORD if name == PASSWORD_FILE else None


async def test_one_budget_through_the_sentinels(sentinel_setup: RedisSentinelSetup) -> None:
    policy = sentinel_policy(sentinel_setup, 10**6, "failClosed").model_copy(update={"budgets": []})
    config = RateLimitConfig.model_validate({**policy.model_dump(), "budgets": [BUDGET]})
    replicas = [build_limiter(config, files), build_limiter(config, files)]
    admissions = await asyncio.gather(
        *(replicas[i % 2].admit_spend(ALLOW_ALL, Caller(), CHAIN, 0, 1000) for i in range(200))
    )
    allowed = [a for a in admissions if a.allowed]
    assert len(allowed) == 50
    assert {a.limit for a in admissions if not a.allowed} == {"spend_day"}
    # Unknown usage keeps the reservation; a settle to nothing gives it all back.
    for admission in allowed[:10]:
        await admission.settle(None)
    again = [await replicas[1].admit_spend(ALLOW_ALL, Caller(), CHAIN, 0, 1000) for _ in range(11)]
    assert [a.allowed for a in again] == [True] * 10 + [False]
    for limiter in replicas:
        await limiter.aclose()


@pytest.mark.parametrize("on_unavailable", ["failOpen", "failClosed"])
async def test_unreachable_redis(on_unavailable: str) -> None:
    # A port nothing listens on: connection refused at once.
    url = f"redis://127.0.0.1:{free_port()}/0"
    config = RateLimitConfig.model_validate(
        {
            "policy": "ns/down",
            "limits": {},
            "backend": {"type": "redis", "redis_url_file": "url"},
            "on_redis_unavailable": on_unavailable,
            "budgets": [BUDGET],
        }
    )
    limiter = build_limiter(config, {"url": url}.get)
    admission = await limiter.admit_spend(ALLOW_ALL, Caller(), CHAIN, 0, 1000)
    assert limiter.degraded
    if on_unavailable == "failOpen":
        assert admission.allowed and admission.spend is not None
        # Counted locally: this replica alone still cannot pass the budget.
        more = [await limiter.admit_spend(ALLOW_ALL, Caller(), CHAIN, 0, 1000) for _ in range(50)]
        assert sum(a.allowed for a in more) == 49
    else:
        assert not admission.allowed and admission.status == 503 and admission.limit == "backend"
    await limiter.aclose()
