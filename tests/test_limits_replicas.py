"""Exactness across replicas: three processes, one Redis, one key, 600 concurrent admissions.

Each process builds its own limiter (its own connection pool), waits on a shared
barrier, then fires 200 admissions at once. Across the three, exactly the policy's
budget is accepted; every refusal is a 429 whose Retry-After points at the moment
the oldest admitted second leaves the rolling minute. The same holds on one standalone
server and on a real three-master Redis Cluster (the limiter's keys are hash-tagged, so
each admission script runs on one slot's primary).
"""

from __future__ import annotations

import asyncio
import logging
import multiprocessing as mp
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from multiprocessing.synchronize import Barrier
from typing import Any

import pytest

from agent_runtime.config import RateLimitConfig
from agent_runtime.limits import build_limiter
from agent_runtime.limits.base import BUCKET_US, US_PER_S, WINDOW_BUCKETS
from tests.support.redis_cluster import redis_cluster_or_skip
from tests.support.redis_server import redis_or_skip

PROCESSES = 3
PER_PROCESS = 200


@dataclass(frozen=True)
class _Caller:
    id: str = "key-1"
    kind: str = "apiKey"
    tier: str | None = None


@dataclass(frozen=True)
class Topology:
    """How the processes reach Redis: the config's backend, its files, and how to empty Redis."""

    name: str
    backend: dict[str, Any]
    files: dict[str, str]
    flush: Callable[[], None]


@pytest.fixture(scope="module", params=["standalone", "cluster"])
def topology(request: pytest.FixtureRequest) -> Iterator[Topology]:
    if request.param == "standalone":
        with redis_or_skip() as server:
            url = server.url

            def flush() -> None:
                import redis

                redis.Redis.from_url(url).flushall()

            yield Topology("standalone", {"type": "redis", "redis_url_file": "url"}, {"url": url}, flush)
    else:
        with redis_cluster_or_skip() as cluster:
            backend = {"type": "redis", "redis": {"mode": "cluster", "nodes": cluster.nodes}}
            yield Topology("cluster", backend, {}, cluster.flushall)


async def _fire(
    backend: dict[str, Any], files: dict[str, str], limits: dict[str, int], tokens: int, barrier: Barrier
) -> list[dict[str, Any]]:
    config = RateLimitConfig.model_validate({"policy": "ns/exact", "limits": limits, "backend": backend})
    limiter = build_limiter(config, files.get)
    subject = limiter.subject(_Caller())
    await asyncio.get_running_loop().run_in_executor(None, barrier.wait)
    admissions = await asyncio.gather(*(limiter.admit(subject, tokens) for _ in range(PER_PROCESS)))
    await limiter.aclose()
    return [
        {
            "allowed": a.allowed,
            "status": a.status,
            "limit": a.limit,
            "retry_after": a.retry_after,
            "headers": a.headers,
            "at_us": a.at_us,
            "degraded": a.degraded,
        }
        for a in admissions
    ]


def _worker(
    backend: dict[str, Any],
    files: dict[str, str],
    limits: dict[str, int],
    tokens: int,
    barrier: Barrier,
    out: mp.Queue,
) -> None:
    logging.basicConfig(level=logging.WARNING)  # a degraded limiter says why on stderr
    try:
        out.put(asyncio.run(_fire(backend, files, limits, tokens, barrier)))
    except BaseException as exc:
        out.put(repr(exc))
        raise


def _run_replicas(topology: Topology, limits: dict[str, int], tokens: int) -> list[dict[str, Any]]:
    ctx = mp.get_context("spawn")
    barrier = ctx.Barrier(PROCESSES)
    out: mp.Queue = ctx.Queue()
    args = (topology.backend, topology.files, limits, tokens, barrier, out)
    procs = [ctx.Process(target=_worker, args=args) for _ in range(PROCESSES)]
    for p in procs:
        p.start()
    results: list[dict[str, Any]] = []
    for _ in procs:
        got = out.get(timeout=120)
        assert isinstance(got, list), got
        results.extend(got)
    for p in procs:
        p.join(timeout=30)
        assert p.exitcode == 0
    return results


@pytest.mark.slow
@pytest.mark.parametrize(
    ("limits", "tokens", "budget_header", "limit_name"),
    [
        ({"requests_per_minute": 60}, 0, "RateLimit-Remaining", "requests"),
        ({"tokens_per_minute": 6000}, 100, "X-RateLimit-Remaining-Tokens", "tokens"),
    ],
    ids=["requests", "tokens"],
)
def test_exactly_the_budget_across_three_processes(
    topology: Topology, limits: dict[str, int], tokens: int, budget_header: str, limit_name: str
) -> None:
    topology.flush()
    results = _run_replicas(topology, limits, tokens)
    assert len(results) == PROCESSES * PER_PROCESS
    accepted = [r for r in results if r["allowed"]]
    refused = [r for r in results if not r["allowed"]]
    print(
        f"\n{topology.name} {limit_name}: {len(accepted)} accepted of {len(results)} from {PROCESSES} processes"
    )
    assert not any(r["degraded"] for r in results)
    assert len(accepted) == 60
    # Each accepted admission saw a distinct remaining budget: no two replicas counted the same unit.
    remaining = sorted(int(r["headers"][budget_header]) for r in accepted)
    assert remaining == [i * (tokens or 1) for i in range(60)]
    first_bucket = min(r["at_us"] for r in accepted) // BUCKET_US
    frees_at = (first_bucket + WINDOW_BUCKETS + 1) * BUCKET_US
    for r in refused:
        assert r["status"] == 429 and r["limit"] == limit_name
        retry_us = round(r["retry_after"] * US_PER_S)
        # Retry-After lands exactly when the oldest admitted second leaves the rolling minute.
        assert r["at_us"] + retry_us == frees_at
        assert int(r["headers"]["Retry-After"]) == -(-retry_us // US_PER_S)
        assert 1 <= int(r["headers"]["Retry-After"]) <= 61
