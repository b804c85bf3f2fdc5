"""What an admission costs per Redis mode: standalone, Sentinel and a three-master Cluster.

The same limiter and policy as ``bench/ratelimit.py`` (requests + tokens + concurrency, 1000
subjects, nothing refused), against a standalone redis-server, a master behind three Sentinels
and a three-master Redis Cluster, all started here on loopback. Standalone and Sentinel use
the limiter's direct pooled connections; the Cluster goes through redis-py's ``RedisCluster``
(slot routing, MOVED/ASK handling), whose per-command machinery is the difference to read.

    python bench/redis_modes.py [--n 3000] [--concurrency 64]

Bounded: a default run takes well under a minute.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parent.parent
sys.path[:0] = [str(REPO / "operator"), str(REPO)]

from agent_runtime.config import RateLimitConfig  # noqa: E402
from agent_runtime.limits import build_limiter  # noqa: E402
from bench.ratelimit import SUBJECTS, _latencies, _percentile, _throughput  # noqa: E402
from tests.support.redis_cluster import MASTER_NAME, RedisClusterSetup, RedisSentinelSetup  # noqa: E402
from tests.support.redis_server import RedisServer  # noqa: E402

LIMITS = {"requests_per_minute": 10**8, "tokens_per_minute": 10**10, "concurrency": 10**6}


def _config(redis: dict[str, Any]) -> RateLimitConfig:
    return RateLimitConfig.model_validate(
        {
            "policy": "bench/modes",
            "limits": LIMITS,
            "backend": {"type": "redis", "redis": redis, "key_prefix": "b:"},
        }
    )


async def measure(
    name: str, config: RateLimitConfig, n: int, concurrency: int, files: dict[str, str] | None = None
) -> dict[str, Any]:
    """p50/p99 of admit+settle one at a time, client CPU per operation, rate at ``concurrency``."""
    limiter = build_limiter(config, (files or {}).get)

    async def op(i: int) -> None:
        admission = await limiter.admit(SUBJECTS[i % len(SUBJECTS)], 500)
        assert admission.allowed and not admission.degraded, admission
        await admission.settle(300)

    await _latencies(op, min(n, 500))  # warm-up: slot map, scripts, pools
    cpu = time.process_time_ns()
    lat = await _latencies(op, n)
    cpu_us = (time.process_time_ns() - cpu) / n / 1000
    rate = await _throughput(op, n * 2, concurrency)
    await limiter.aclose()
    return {
        "mode": name,
        "p50_us": round(_percentile(lat, 0.5), 1),
        "p99_us": round(_percentile(lat, 0.99), 1),
        "cpu_us_per_op": round(cpu_us, 1),
        "ops_per_s": round(rate),
    }


def _run(coro: Any) -> Any:
    """Run on uvloop, the runtime's loop."""
    import uvloop

    return uvloop.run(coro)


def main() -> None:
    """Start the three deployments, measure, print the table (JSON rows on the last line)."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--n", type=int, default=3000, help="admit+settle pairs per latency run")
    parser.add_argument("--concurrency", type=int, default=64, help="pairs in flight for the rate run")
    args = parser.parse_args()
    rows = []
    with RedisServer() as server:
        standalone = {"mode": "standalone", "url_file": "url"}
        rows.append(
            _run(measure("standalone", _config(standalone), args.n, args.concurrency, {"url": server.url}))
        )
    with RedisSentinelSetup() as setup:
        redis = {"mode": "sentinel", "sentinels": setup.sentinel_addresses, "master_name": MASTER_NAME}
        rows.append(_run(measure("sentinel", _config(redis), args.n, args.concurrency)))
    with RedisClusterSetup() as cluster:
        redis = {"mode": "cluster", "nodes": cluster.nodes}
        rows.append(_run(measure("cluster", _config(redis), args.n, args.concurrency)))
    print(
        f"admit+settle per Redis mode: n={args.n} one at a time, {args.n * 2} at concurrency {args.concurrency}"
    )
    header = f"{'mode':<11} {'p50 us':>8} {'p99 us':>8} {'cpu us/op':>10} {'ops/s':>8}"
    print(header)
    print("-" * len(header))
    for row in rows:
        print(
            f"{row['mode']:<11} {row['p50_us']:>8.1f} {row['p99_us']:>8.1f} {row['cpu_us_per_op']:>10.1f} "
            f"{row['ops_per_s']:>8}"
        )
    print(f"(load average now: {' '.join(f'{x:.2f}' for x in os.getloadavg())})")
    print(json.dumps(rows))


if __name__ == "__main__":
    main()
